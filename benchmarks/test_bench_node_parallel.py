"""Node-parallel training step (``--placement spread``) on this machine's CPU:
2 gloo ranks, each training its own node, against 2-rank data parallel and
one process, measured in the same run.  A 2-node ResNet-20 DML graph
(CIFAR-100-shaped synthetic data, batch 64, fp32).

Rows (one group):
  one_process    one process trains both nodes on the batch of 64
                 (``KTGFAST_BENCH_THREADS`` threads, default 1: on a shared
                 CPU a second OpenMP thread competing with other work makes
                 steps up to 100x slower, tests/conftest.py)
  ddp_2rank      2 ranks x 1 thread, data parallel: both nodes on 32 images
                 per rank, gradients all-reduced (DDP)
  spread_2rank   2 ranks x 1 thread, node parallel: each rank its own node on
                 the 64 images, one all-gather of the logits per step (the
                 headline row)
  one_node       one process, 1 thread, one ResNet-20 on 64 images (label CE
                 only): the step one rank of node parallel would take if the
                 exchange cost nothing -- the goal on GPUs is spread <= 1.1x
                 this (docs/node_parallel.md); on a 2-core CPU the ranks share
                 the cores with each other (and with whatever else runs), so
                 no speed-up is expected here

Every configuration runs in worker processes that wait on a pipe; a timed
round is "every worker of the configuration runs STEPS steps", and the
configurations are timed interleaved (rotated each round), so load hits them
alike.  Before timing, the first step's node losses of spread_2rank are
checked against one_process (the same math), so no wrong code is timed.

Run by path (``testpaths`` excludes this folder):
    python -m pytest benchmarks/test_bench_node_parallel.py \
        --benchmark-json=benchmarks/results/cpu_node_parallel.json
    python -m ktgfast.bench --from-json benchmarks/results/cpu_node_parallel.json
``KTGFAST_BENCH_ROUNDS`` (default 5) timed rounds of ``KTGFAST_BENCH_STEPS``
(default 2) steps each.
"""
from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
import traceback

import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("pytest_benchmark")

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "node_parallel",
    "title": "node-parallel step, 2x ResNet-20 DML, batch 64, 2 gloo ranks (CPU)",
    "ktgfast": "spread_2rank",
    "ktgfast_label": "spread, 2 ranks x 1 thread (node parallel)",
    "references": {"one_process": "one process, both nodes", "ddp_2rank": "DDP, 2 ranks x 1 thread",
                   "one_node": "one node's own step (1 thread)"},
    # The goal (spread <= 1.1x one node's own step) is for one GPU per rank
    # (docs/node_parallel.md); on a shared 2-core CPU it cannot hold, so none is declared.
    "goals": [],
}

if os.environ.get("KTGFAST_BENCH_DEVICE", "cpu") != "cpu":
    pytest.skip("node_parallel is a CPU / gloo suite", allow_module_level=True)

BATCH, CLASSES = 64, 100
STEPS = int(os.environ.get("KTGFAST_BENCH_STEPS", 2))
ROUNDS = int(os.environ.get("KTGFAST_BENCH_ROUNDS", 5))
GROUP = "node-parallel step (2x ResNet-20 DML, batch 64, CPU)"
# impl -> (world size, placement, graph preset, threads per process)
CONFIGS = {
    "one_process": (1, "replicate", "dml", int(os.environ.get("KTGFAST_BENCH_THREADS", 1))),
    "ddp_2rank": (2, "replicate", "dml", 1),
    "spread_2rank": (2, "spread", "dml", 1),
    "one_node": (1, "replicate", "vanilla", 1),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, placement: str, preset: str, threads: int, out: str,
            conn) -> None:
    """One rank: build the trainer, then run ``n`` steps per ("steps", n) message,
    answering with the last step's node losses (or the error)."""
    try:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        torch.set_num_threads(threads)
        from ktgfast.data import get_dataset
        from ktgfast.graph import get_preset
        from ktgfast.train import TrainConfig, Trainer

        data = get_dataset("synthetic", n_train=BATCH * 2, n_test=BATCH, num_classes=CLASSES, channels=3,
                           image_size=32)
        graph = get_preset(preset, model="resnet20", **({"k": 2} if preset == "dml" else {}))
        per_rank = BATCH // world if placement == "replicate" else BATCH
        cfg = TrainConfig(epochs=1, batch_size=per_rank, lr=0.01, out=os.path.join(out, f"r{rank}"),
                          tensorboard=False, eval_splits=[], augment="none", device="cpu",
                          checkpoint=False, verbose=False, progress_bar=False, placement=placement)
        tr = Trainer(graph, data, cfg)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(BATCH, 3, 32, 32, generator=gen)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        if placement == "replicate" and world > 1:
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        conn.send(("ready", None))
        while True:
            msg, n = conn.recv()
            if msg == "stop":
                break
            for _ in range(n):
                loss = tr.train_step(x, y)
            conn.send(("done", loss.tolist()))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the benchmark
        conn.send(("error", traceback.format_exc()))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        conn.close()


class Pool:
    """The worker processes of one configuration."""

    def __init__(self, impl: str, out: str):
        world, placement, preset, threads = CONFIGS[impl]
        ctx = mp.get_context("spawn")
        port = _free_port()
        self.impl, self.conns, self.procs = impl, [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(rank, world, port, placement, preset, threads,
                                                  os.path.join(out, impl), child), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def _answers(self) -> list:
        out = []
        for rank, c in enumerate(self.conns):
            try:
                kind, value = c.recv()
            except EOFError:
                raise RuntimeError(f"{self.impl}: rank {rank} died without an answer") from None
            if kind == "error":
                raise RuntimeError(f"{self.impl}: rank {rank} failed:\n{value}")
            out.append(value)
        return out

    def wait_ready(self) -> None:
        self._answers()

    def steps(self, n: int) -> list:
        for c in self.conns:
            c.send(("steps", n))
        return self._answers()

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("stop", 0))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join()


@pytest.fixture(scope="module")
def timing():
    """Every configuration's round times, timed interleaved."""
    with tempfile.TemporaryDirectory() as out:
        pools = {impl: Pool(impl, out) for impl in CONFIGS}
        try:
            for p in pools.values():
                p.wait_ready()
            # the guard: the same first step (spread: each node's loss from its rank)
            first = {impl: p.steps(1) for impl, p in pools.items()}
            want = torch.tensor(first["one_process"][0])
            got = torch.tensor(first["spread_2rank"]).sum(0)  # each rank books its own node
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            for p in pools.values():  # warm-up round
                p.steps(STEPS)
            samples: dict[str, list[float]] = {impl: [] for impl in pools}
            order = list(pools)
            for r in range(ROUNDS):
                for impl in order[r % len(order):] + order[:r % len(order)]:
                    t0 = time.perf_counter()
                    pools[impl].steps(STEPS)
                    samples[impl].append(time.perf_counter() - t0)
            yield samples
        finally:
            for p in pools.values():
                p.close()


def _record(benchmark, samples: list[float], impl: str) -> None:
    """Store the interleaved rounds as this benchmark's (one iteration each,
    as ``benchmark.pedantic`` stores its own)."""
    benchmark.group = GROUP
    benchmark.extra_info.update(impl=impl, interleaved=True, timer="time.perf_counter",
                                images_per_round=BATCH * STEPS, steps_per_round=STEPS,
                                world_size=CONFIGS[impl][0], placement=CONFIGS[impl][1],
                                threads_per_process=CONFIGS[impl][3],
                                images_per_s=BATCH * STEPS / statistics.median(samples))
    if getattr(benchmark, "disabled", False):
        return
    stats = benchmark._make_stats(1)
    for s in samples:
        stats.update(s)
    benchmark._mode = "benchmark.pedantic(...)"


@pytest.mark.parametrize("impl", list(CONFIGS))
def test_node_parallel_step(benchmark, timing, impl):
    _record(benchmark, timing[impl], impl)
