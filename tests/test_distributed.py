"""Data-parallel graph training under torch.distributed (gloo on CPU, real
processes): DDP on every learning node equals one process on the global
batch; torchrun trains a graph from the CLI; sharded evaluation is exact;
checkpoints hold every rank's RNG state and a 2-rank resume is exact.  The
other methods: tests/test_distributed_methods.py; killed ranks, restarts and
two-node launches: tests/test_distributed_faults.py."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from ktgfast.graph import Edge, Gate, Graph, Node
from ktgfast.train import TrainConfig, Trainer
from support.data import tiny_data
from support.processes import free_port, spawn

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, GLOBAL_B = 3, 32


def graph() -> Graph:
    """Three MLPs (no BatchNorm, so DDP is exact without SyncBatchNorm), peer KL
    with a correct gate, a linear gate and a cos push: every per-sample
    mechanism of the fused op."""
    mlp = {"image_size": 8, "hidden": 16}
    nodes = [Node(n, "mlp", mlp) for n in ("a", "b", "c")]
    edges = [Edge("label", n, "ce") for n in ("a", "b", "c")]
    edges += [Edge("b", "a", "kl", Gate("correct"), T=2.0), Edge("a", "b", "kl", Gate("linear")),
              Edge("c", "b", "cos", weight=0.5), Edge("a", "c", "kl")]
    return Graph(nodes, edges, "a", name="three")


def config(out: str, batch: int) -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=batch, lr=0.1, schedule="constant", augment="none",
                       tensorboard=False, device="cpu", progress_bar=False, verbose=False,
                       out=out, eval_splits=["val"])


def batches():
    gen = torch.Generator().manual_seed(1)
    data = tiny_data()
    out = []
    for _ in range(STEPS):
        idx = torch.randperm(len(data.train.labels), generator=gen)[:GLOBAL_B]
        x = (data.train.images[idx].float() - 128) / 64
        out.append((x, data.train.labels[idx]))
    return out


def _ddp_steps(rank, world, out_dir):
    tr = Trainer(graph(), tiny_data(), config(os.path.join(out_dir, f"r{rank}"), GLOBAL_B // world))
    for x, y in batches():
        tr.train_step(x.chunk(world)[rank], y.chunk(world)[rank])
    torch.save([m.state_dict() for m in tr.models], os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_rank_ddp_equals_one_process_on_the_global_batch(tmp_path):
    spawn(_ddp_steps, 2, str(tmp_path))
    single = Trainer(graph(), tiny_data(), config(str(tmp_path / "single"), GLOBAL_B))
    for x, y in batches():
        single.train_step(x, y)
    want = [m.state_dict() for m in single.models]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for g, w in zip(got, want):
            for k in w:
                torch.testing.assert_close(g[k], w[k], rtol=1e-5, atol=1e-6, msg=f"rank {rank} {k}")
    # and the steps moved the weights (the comparison is not of untouched models)
    fresh = Trainer(graph(), tiny_data(), config(str(tmp_path / "fresh"), GLOBAL_B))
    assert any(not torch.equal(fresh.models[0].state_dict()[k], want[0][k]) for k in want[0])


@pytest.mark.slow
def test_torchrun_trains_a_graph_from_the_cli(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "ktgfast", "train", "--graph", "dml", "--graph-arg", "model=cnn_small",
           "--data", "mnist5k", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
           "--tensorboard", "false", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_acc:node0" in rows[0]
    # one process wrote the run folder: one console header, one checkpoint
    assert proc.stdout.count("run folder:") == 1 or proc.stdout.count("epoch   1") == 1
    assert (out / "checkpoint.pt").exists()


def _evaluate(rank, world, out_dir):
    data = tiny_data(n_test=61)  # an odd split: shards of 31 and 30, nothing padded
    tr = Trainer(graph(), data, config(os.path.join(out_dir, f"e{rank}"), 16))
    acc = tr.evaluate("test")
    torch.save(acc, os.path.join(out_dir, f"acc{rank}.pt"))


@pytest.mark.slow
def test_sharded_evaluation_is_exact(tmp_path):
    spawn(_evaluate, 2, str(tmp_path))
    single = Trainer(graph(), tiny_data(n_test=61), config(str(tmp_path / "single"), 16))
    want = single.evaluate("test")
    assert torch.load(tmp_path / "acc0.pt") == torch.load(tmp_path / "acc1.pt") == want


def test_eval_shards_cover_every_sample_once():
    from ktgfast.parallel.eval import eval_shard

    for n in (0, 1, 7, 61, 64):
        for world in (1, 2, 3, 5):
            ranges = [eval_shard(n, r, world) for r in range(world)]
            covered = [i for a, b in ranges for i in range(a, b)]
            assert covered == list(range(n))


def test_sync_bn_on_cpu_is_refused_before_training(tmp_path):
    cfg = config(str(tmp_path / "sbn"), 16)
    cfg.sync_bn = True
    with pytest.raises(ValueError, match=r"sync_bn = True \(--sync-bn\): SyncBatchNorm runs only on CUDA"):
        Trainer(graph(), tiny_data(), cfg)


# ------------------------------------------------------------ resume, RNG, NaN
def resume_graph() -> Graph:
    """A Wide ResNet with dropout (the global RNG of each rank, every step) and
    a BatchNorm CNN, peer KL both ways."""
    nodes = [Node("w", "wrn16_1", {"dropout": 0.3}), Node("c", "cnn_small", {"pool": 2})]
    edges = [Edge("label", "w", "ce"), Edge("label", "c", "ce"), Edge("w", "c", "kl"), Edge("c", "w", "kl")]
    return Graph(nodes, edges, "w", name="wc")


def resume_config(out: str) -> TrainConfig:
    cfg = config(out, 16)
    cfg.augment, cfg.pad, cfg.mixup, cfg.mixup_alpha = "crop_flip", 2, "beta", 1.0
    return cfg


def _straight_and_first_epoch(rank, world, out_dir):
    straight = Trainer(resume_graph(), tiny_data(), resume_config(os.path.join(out_dir, "straight")))
    straight.fit()
    torch.save({"states": [m.state_dict() for m in straight.models], "rng": torch.get_rng_state()},
               os.path.join(out_dir, f"straight{rank}.pt"))
    # the interrupted run: epoch 1 of 2 and its checkpoint, then the processes end
    Trainer(resume_graph(), tiny_data(), resume_config(os.path.join(out_dir, "resumed"))).train_epoch()


def _resume(rank, world, out_dir):
    tr = Trainer(resume_graph(), tiny_data(), resume_config(os.path.join(out_dir, "resumed")), resume=True)
    tr.fit()
    torch.save({"states": [m.state_dict() for m in tr.models], "rng": torch.get_rng_state()},
               os.path.join(out_dir, f"resumed{rank}.pt"))


@pytest.mark.slow
def test_two_rank_resume_is_exact(tmp_path):
    """Interrupted after epoch 1 and resumed in new processes = uninterrupted,
    on every rank: the checkpoint holds each rank's RNG state (dropout draws
    from it every step) and rank 0's BatchNorm statistics, which every rank
    has at a period's end."""
    spawn(_straight_and_first_epoch, 2, str(tmp_path))
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1 and len(saved["rng_ranks"]) == 2
    assert not torch.equal(saved["rng_ranks"][0]["torch"], saved["rng_ranks"][1]["torch"])
    spawn(_resume, 2, str(tmp_path))
    for rank in (0, 1):
        want, got = torch.load(tmp_path / f"straight{rank}.pt"), torch.load(tmp_path / f"resumed{rank}.pt")
        assert torch.equal(got["rng"], want["rng"]), f"rank {rank}: RNG state differs after resume"
        for g, w in zip(got["states"], want["states"]):
            for k in w:
                assert torch.equal(g[k], w[k]), f"rank {rank}: {k}"
    def accuracies(run):
        with open(tmp_path / run / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if "_acc:" in k or "loss" in k} for r in csv.DictReader(f)]

    assert accuracies("resumed") == accuracies("straight") and len(accuracies("straight")) == 2


def _nan_on_rank1(rank, world, out_dir):
    cfg = config(os.path.join(out_dir, "nan"), 16)
    cfg.log_every = 1
    tr = Trainer(graph(), tiny_data(), cfg)
    batches = tr.step.batches

    def poisoned(period):
        for k, (x, y) in enumerate(batches(period)):
            yield (torch.full_like(x, float("nan")) if rank == 1 and k == 2 else x), y

    tr.step.batches = poisoned
    try:
        tr.train_epoch()
    except Exception as exc:  # noqa: BLE001 - the parent checks what each rank raised
        torch.save(f"{type(exc).__name__}: {exc}", os.path.join(out_dir, f"nan{rank}.pt"))


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """The finite check is agreed over ranks: rank 0, whose own loss stayed
    finite, stops with rank 1 instead of waiting for it in the next step."""
    spawn(_nan_on_rank1, 2, str(tmp_path))
    msgs = [torch.load(tmp_path / f"nan{r}.pt") for r in (0, 1)]
    assert msgs[0] == msgs[1]
    assert msgs[0].startswith("NonFiniteLossError") and "at step 2 (epoch 1)" in msgs[0]


# ------------------------------------------------------------ scripts/gpu_check.sh
GPU_CHECK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "gpu_check.sh")


def test_gpu_check_script_parses_and_refuses_without_a_gpu(tmp_path):
    """``bash -n``, and with no GPU visible (CUDA_VISIBLE_DEVICES="" hides any):
    one line on stderr, exit status 2, no report folder."""
    assert subprocess.run(["bash", "-n", GPU_CHECK], capture_output=True, text=True).returncode == 0
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", GPU_CHECK, str(tmp_path / "report")], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: FAILED: "), proc.stderr
    assert "no CUDA GPU visible" in lines[0] or "CPU-only build" in lines[0]
    assert not (tmp_path / "report").exists()
