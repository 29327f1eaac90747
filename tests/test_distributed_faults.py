"""Faults and machines under torchrun (docs/distributed.md), with real
launches of ``python -m torch.distributed.run`` on 127.0.0.1 (gloo, CPU):

* one rank SIGKILLed mid-epoch: the job stops, torchrun's summary names the
  rank, the surviving rank says where the run stands; ``--resume`` continues
  from the last checkpoint;
* ``--max-restarts 1``: torchrun restarts the workers and the same command
  continues from the checkpoint;
* two torchrun launches (``--nnodes 2``, c10d rendezvous) train one graph:
  the multi-machine path.

The killed rank is found through a marker file it writes at a known step,
where it then waits (``support.processes``); no hook in ktgfast.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from support.processes import free_port, torchrun
from support.wait import wait_for

pytestmark = pytest.mark.slow

BLOCK = "2:3:1"  # rank 1 stops before step 3 of epoch 2 (6 steps an epoch)


class Launch:
    """One torchrun process (its own session, so cleanup ends it and its
    workers), output in a log file."""

    def __init__(self, cmd: list[str], log: Path):
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"torchrun ended early:\n{self.text()[-3000:]}"

    def wait(self) -> int:
        return self.proc.wait(timeout=900)

    def text(self) -> str:
        return self.log.read_text()

    def end(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def launches():
    started: list[Launch] = []
    yield started
    for launch in started:
        launch.end()


def script_args(out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), "--epochs", "3", *extra]


def kill_blocked_rank(launch: Launch, marker: Path) -> None:
    wait_for(marker.exists, "rank 1 reaching its marker", check=launch.alive)
    os.kill(int(marker.read_text()), signal.SIGKILL)


def epochs_in(out: Path) -> int:
    return len((out / "metrics.csv").read_text().splitlines()) - 1


def test_a_killed_rank_stops_the_job_and_resume_continues(tmp_path, launches):
    out, marker = tmp_path / "run", tmp_path / "rank1.pid"
    static = ["--nproc-per-node", "2", "--max-restarts", "0", "--master-addr", "127.0.0.1",
              "--master-port", str(free_port())]
    first = Launch(torchrun(*static) + script_args(out, "--block", BLOCK, "--marker", str(marker)),
                   tmp_path / "first.log")
    launches.append(first)
    kill_blocked_rank(first, marker)
    assert first.wait() != 0
    log = first.text()
    # torchrun names the killed rank; the surviving one says where the run stands
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", log), log[-3000:]
    assert "ktgfast: rank 0 of 2 stopped in epoch 2; epoch 1 was its last completed one" in log
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1 and epochs_in(out) == 1

    again = Launch(torchrun(*static[:-1], str(free_port())) + script_args(out, "--resume"),
                   tmp_path / "again.log")
    launches.append(again)
    assert again.wait() == 0, again.text()[-3000:]
    assert epochs_in(out) == 3
    assert yaml.safe_load((out / "resumes.yaml").read_text())["resumes"][0]["at_epoch"] == 1


def test_max_restarts_restarts_from_the_checkpoint(tmp_path, launches):
    out, marker = tmp_path / "run", tmp_path / "rank1.pid"
    job = Launch(torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1")
                 + script_args(out, "--block", BLOCK, "--marker", str(marker)), tmp_path / "job.log")
    launches.append(job)
    kill_blocked_rank(job, marker)
    assert job.wait() == 0, job.text()[-3000:]
    log = job.text()
    assert "torchrun restart 1: resuming" in log and "at epoch 1 (step 6)" in log
    assert epochs_in(out) == 3
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 3 and [r["at_epoch"] for r in saved["resumes"]] == [1]


def test_two_torchrun_launches_on_loopback_train_one_graph(tmp_path, launches):
    """The multi-machine command, both "machines" on 127.0.0.1: one process
    each, the c10d rendezvous joins them into one world of two ranks."""
    out = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [Launch(torchrun("--nnodes", "2", "--node-rank", str(i), "--nproc-per-node", "1",
                             "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                             "--rdzv-id", "ktgfast-loopback")
                    + ["--out", str(out), "--epochs", "1"], tmp_path / f"node{i}.log") for i in (0, 1)]
    launches.extend(nodes)
    for node in nodes:
        assert node.wait() == 0, node.text()[-3000:]
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["world_size"] == 2 and len(saved["rng_ranks"]) == 2 and epochs_in(out) == 1
    # the rank-0 process (on whichever node the rendezvous made it) alone printed the run
    assert sum(node.text().count("run folder:") for node in nodes) == 1
