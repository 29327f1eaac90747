"""Real multi-process runs for the distributed tests: ranks spawned with
``torch.multiprocessing`` on 127.0.0.1 (gloo, one thread each), and a
training script for ``torchrun`` launches (``python -m torch.distributed.run
... tests/support/processes.py --out DIR ...``).

The script trains a small graph on the tiny synthetic data.  With ``--block
EPOCH:STEP:RANK --marker FILE`` that rank, before step STEP of epoch EPOCH,
writes its pid to FILE and waits to be killed -- unless FILE exists already,
so a restarted or resumed job runs through.  A test kills the pid it reads:
a real SIGKILL of one rank at a known point, mid-epoch, with no hook in
ktgfast itself."""
from __future__ import annotations

import os
import socket
import sys

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from ktgfast.parallel.env import shutdown

    try:
        fn(rank, world, *args)
    finally:
        shutdown()


def spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes; an exception in
    any rank fails the call (``mp.spawn`` re-raises it with the rank)."""
    mp.spawn(_rank_main, args=(world, free_port(), fn, args), nprocs=world, join=True)


# ----------------------------------------------------------- the torchrun script
SCRIPT = os.path.abspath(__file__)


def torchrun(*launcher: str) -> list[str]:
    """The command ``torchrun LAUNCHER... SCRIPT`` (append the script's arguments)."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher, SCRIPT]


def _graph():
    from ktgfast.graph import Edge, Graph, Node

    mlp = {"image_size": 8, "hidden": 16}
    nodes = [Node("a", "mlp", mlp), Node("b", "cnn_small", {"pool": 2})]
    edges = [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("a", "b", "kl"), Edge("b", "a", "kl")]
    return Graph(nodes, edges, "a", name="pair")


def _block_at(step, epoch: int, at: int, marker: str):
    """``step.batches`` that, before step ``at`` of ``epoch``, writes this pid to
    ``marker`` and waits for a signal (the test's SIGKILL)."""
    import signal

    from support.wait import write_atomic

    batches = step.batches

    def blocking(period):
        for k, batch in enumerate(batches(period)):
            if period == epoch and k == at and not os.path.exists(marker):
                write_atomic(marker, str(os.getpid()))
                while True:
                    signal.pause()
            yield batch

    return blocking


def main(argv: list[str]) -> None:
    import argparse

    from ktgfast.train import TrainConfig, Trainer
    from support.data import tiny_data

    ap = argparse.ArgumentParser(description="a small graph, trained under torchrun")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--block", help="EPOCH:STEP:RANK")
    ap.add_argument("--marker")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=0.1, schedule="constant", augment="crop_flip",
                      pad=2, tensorboard=False, device="cpu", progress_bar=False, verbose=True,
                      out=args.out, eval_splits=["val"])
    tr = Trainer(_graph(), tiny_data(), cfg, resume=args.resume)
    if args.block:
        epoch, at, rank = map(int, args.block.split(":"))
        if tr.dist.rank == rank:
            tr.step.batches = _block_at(tr.step, epoch, at, args.marker)
    tr.fit()
    del tr
    from ktgfast.parallel.env import shutdown

    shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))  # tests/: ``support`` imports
    main(sys.argv[1:])


__all__ = ["SCRIPT", "free_port", "spawn", "torchrun"]
