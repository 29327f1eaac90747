"""Train a 2-node Deep Mutual Learning graph on MNIST-5k with the fused op.

Every node gets a label CE edge and a KL edge from its peer; all edges of a
batch are one `ktgfast.ops.gated_edge_loss` call and one backward.  This is the
training loop written by hand around the op; `ktgfast train --graph dml` does
the same with the full trainer.

    python scripts/dml_mnist5k.py --epochs 3
"""
from __future__ import annotations

import argparse
import time

import torch

from ktgfast import EdgeTable
from ktgfast.data import load_mnist5k
from ktgfast.graph import get_preset
from ktgfast.models import build_model
from ktgfast.ops import gated_edge_loss


@torch.no_grad()
def accuracy(models, images, labels, batch=500):
    hits = torch.zeros(len(models) + 1)
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float().div_(255).sub_(0.1307).div_(0.3081)
        z = torch.stack([m(x) for m in models])
        y = labels[i : i + batch]
        hits[:-1] += (z.argmax(-1) == y).sum(-1).float()
        hits[-1] += (z.mean(0).argmax(-1) == y).sum().float()
    return (100 * hits / len(images)).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)  # cnn_small collapses under DML at 0.05
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    data = load_mnist5k()
    train = data["train"]
    models = [build_model("cnn_small", 10, in_channels=1) for _ in range(args.nodes)]
    opts = [torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9, nesterov=True) for m in models]
    table = EdgeTable(get_preset("dml", k=args.nodes, peer="sum").edge_specs(), args.nodes)
    print(f"MNIST-5k: {len(train.labels)} train / {len(data['val'].labels)} val / "
          f"{len(data['test'].labels)} test; {args.nodes}-node DML, {len(table)} edges")
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        for m in models:
            m.train()
        perm = torch.randperm(len(train.labels))
        for i in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[i : i + args.batch]
            x = train.images[idx].float().div_(255).sub_(0.1307).div_(0.3081)
            logits = torch.stack([m(x) for m in models])  # (M, B, C)
            out = gated_edge_loss(logits, train.labels[idx], table)
            for o in opts:
                o.zero_grad(set_to_none=True)
            out.node_loss.sum().backward()  # node t's parameters see only L_t
            for o in opts:
                o.step()
        for m in models:
            m.eval()
        val = accuracy(models, data["val"].images, data["val"].labels)
        names = [f"node{i}" for i in range(args.nodes)] + ["ensemble"]
        print(f"epoch {epoch}  {time.perf_counter() - t0:5.1f}s  val acc: "
              + "  ".join(f"{n} {a:.1f}%" for n, a in zip(names, val)))
    test = accuracy(models, data["test"].images, data["test"].labels)
    print("test acc: " + "  ".join(f"{n} {a:.1f}%" for n, a in zip(names, test)))


if __name__ == "__main__":
    main()
