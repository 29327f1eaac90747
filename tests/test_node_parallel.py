"""Node-parallel training (``--placement spread``, docs/node_parallel.md):
real gloo ranks spawned from pytest; each rank trains its own nodes on the
same batch and the result equals one process (sources are detached)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from ktgfast.graph import Edge, Gate, Graph, GraphError, Node, load_graph, save_graph, validate
from ktgfast.parallel.spread import NodePlacement
from ktgfast.train import TrainConfig, Trainer
from support.data import tiny_data
from support.processes import free_port, spawn

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, B, IMAGE = 3, 32, 16
MAP = {"a": 1, "b": 0, "c": 1}  # the YAML map of the 2-rank case (not round-robin)


def graph(ranks: dict | None = None) -> Graph:
    """Three small CNNs (4x4 attention maps at 16 px) and their ensemble: label
    CE, a Prob(+)&Att(+) edge under a correct gate, a linear-gated KL, a
    Prob(-)&Att(-) push and a KL from the ensemble (a function of every node's
    logits).  Every rank sees the whole batch, so BatchNorm is exact."""
    nodes = [Node(n, "cnn_small", {"pool": 2}, rank=(ranks or {}).get(n)) for n in ("a", "b", "c")]
    edges = [Edge("label", n, "ce") for n in ("a", "b", "c")]
    edges += [Edge("b", "a", "kl&pull", Gate("correct"), T=2.0), Edge("a", "b", "kl", Gate("linear")),
              Edge("c", "b", "cos&push", weight=0.5), Edge("ens", "c", "kl")]
    return Graph(nodes + [Node("ens", "ensemble")], edges, "a", name="three-att", crop_sizes=[1, 2])


def config(out: str, placement: str = "spread", **kw) -> TrainConfig:
    opts = dict(epochs=1, batch_size=B, lr=0.05, schedule="constant", augment="none", tensorboard=False,
                device="cpu", progress_bar=False, verbose=False, out=out, eval_splits=["val"],
                placement=placement)
    opts.update(kw)
    return TrainConfig(**opts)


def data():
    return tiny_data(image_size=IMAGE)


def batches(d=None):
    gen = torch.Generator().manual_seed(1)
    d = d or data()
    out = []
    for _ in range(STEPS):
        idx = torch.randperm(len(d.train.labels), generator=gen)[:B]
        out.append(((d.train.images[idx].float() - 128) / 64, d.train.labels[idx]))
    return out


def single_process(out: str, g: Graph, d=None):
    d = d or data()
    tr = Trainer(g, d, config(out, "replicate"))
    losses = [tr.train_step(x, y) for x, y in batches(d)]
    return [m.state_dict() for m in tr.models], losses


def assert_states_close(got, want, what: str, atol: float = 1e-6, rtol: float = 0.0) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=rtol, atol=atol, msg=f"{what} node {i} {k}")


# ------------------------------------------------------------- placement
def test_round_robin_over_model_nodes_and_the_mesh():
    g = graph()
    assert NodePlacement.of(g, 1).owner == (0, 0, 0, None)
    assert NodePlacement.of(g, 2).owner == (0, 1, 0, None)  # node i -> rank i % world
    p = NodePlacement.of(g, 6)  # 3 node shards x 2 data replicas
    assert (p.owner, p.node_shards, p.data_replicas) == ((0, 1, 2, None), 3, 2)
    m = NodePlacement.of(graph(MAP), 2)
    assert (m.owner, m.source) == ((1, 0, 1, None), "graph")


@pytest.mark.parametrize("world, ranks, message", [
    (4, None, r"--placement spread: WORLD_SIZE=4 does not split the graph's 3 model nodes: launch at "
              r"most 3 processes .* or a multiple of 3 .* e\.g\. --nproc-per-node 3 or 6"),
    (2, {"a": 0, "b": 2, "c": 1}, r"^graph\.nodes\[1\]\.rank: 2 for node 'b' but WORLD_SIZE=2; allowed: 0\.\.1$"),
    (3, {"a": 0, "b": 2, "c": 2}, r"rank 1 trains no node"),
    (3, {"a": 0, "b": 1, "c": 1}, r"places its nodes on 2 ranks but WORLD_SIZE=3 is not a multiple of 2"),
])
def test_placement_refusals_are_one_line(world, ranks, message):
    with pytest.raises(ValueError, match=message) as err:
        NodePlacement.of(graph(ranks), world)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"a": True}, r"graph\.nodes\[0\]\.rank: True for node 'a'; allowed: an integer >= 0"),
    ({"b": -1}, r"graph\.nodes\[1\]\.rank: -1 for node 'b'; allowed: an integer >= 0"),
    ({"ens": 0, "a": 0, "b": 0, "c": 0}, r"graph\.nodes\[3\]\.rank: 0 on ensemble node 'ens'"),
    ({"a": 0}, r"graph\.nodes\[1\]\.rank: missing for node 'b' while other nodes give one"),
])
def test_validate_checks_the_rank_keys(change, message):
    g = graph()
    g.nodes = [dataclasses.replace(n, rank=change.get(n.name)) for n in g.nodes]
    with pytest.raises(GraphError, match=message):
        validate(g)


def test_rank_keys_round_trip_yaml_and_stay_out_of_the_graph_key(tmp_path):
    save_graph(graph(MAP), tmp_path / "g.yaml")
    back = load_graph(tmp_path / "g.yaml")
    assert {n.name: n.rank for n in back.nodes} == {**MAP, "ens": None}
    assert back.key() == graph().key()  # where a node runs is not what the graph computes


def test_a_rank_beyond_the_world_is_refused_before_the_data_loads(tmp_path):
    with pytest.raises(ValueError, match=r"graph\.nodes\[0\]\.rank: 1 for node 'a' but WORLD_SIZE=1"):
        Trainer(graph(MAP), "no-such-data-set", config(str(tmp_path / "r")))


def test_spread_in_one_process_is_the_ktg_step(tmp_path):
    from ktgfast.train.steps.spread import SpreadStep

    want, want_loss = single_process(str(tmp_path / "single"), graph())
    tr = Trainer(graph(), data(), config(str(tmp_path / "spread")))
    assert isinstance(tr.step, SpreadStep)
    for (x, y), w in zip(batches(), want_loss):
        torch.testing.assert_close(tr.train_step(x, y), w, rtol=0, atol=1e-6)
    assert_states_close([m.state_dict() for m in tr.models], want, "one process")


# ----------------------------------------------------------- real ranks
def _spread_steps(rank, world, out_dir, graph_file):
    g = graph_file or graph()
    tr = Trainer(g, data(), config(os.path.join(out_dir, f"r{rank}")))
    own = [i for i, f in enumerate(tr.step.forwards) if f is not None]
    losses = [tr.train_step(x, y) for x, y in batches()]
    before = [m.state_dict() for m in tr.models]  # own nodes current, the others not yet
    before = [{k: v.clone() for k, v in s.items()} for s in before]
    tr.step.end_training_period()  # the period end: every node from its owner
    torch.save({"own": own, "losses": losses, "before": before,
                "after": [m.state_dict() for m in tr.models]}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_node_parallel_equals_one_process(tmp_path, world):
    """2 ranks with a YAML node -> rank map, 3 ranks round-robin: every rank's
    own nodes after the steps, and every node on every rank after the
    period-end broadcast, within 1e-6 of one process (fp32, CPU)."""
    graph_file = None
    if world == 2:
        graph_file = str(tmp_path / "graph.yaml")
        save_graph(graph(MAP), graph_file)
    spawn(_spread_steps, world, str(tmp_path), graph_file)
    want, want_loss = single_process(str(tmp_path / "single"), graph())
    owners = [MAP["a"], MAP["b"], MAP["c"]] if world == 2 else [0, 1, 2]
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["own"] == [i for i, o in enumerate(owners) if o == rank]
        for i in got["own"]:
            assert_states_close([got["before"][i]], [want[i]], f"rank {rank} own")
            for step, (g, w) in enumerate(zip(got["losses"], want_loss)):
                torch.testing.assert_close(g[i], w[i], rtol=0, atol=1e-6, msg=f"rank {rank} step {step}")
        assert_states_close(got["after"], want, f"rank {rank} after the period end")
    # the steps moved the weights (the comparison is not of untouched models)
    fresh = Trainer(graph(), data(), config(str(tmp_path / "fresh"), "replicate"))
    assert not torch.equal(fresh.models[0].state_dict()["fc.weight"], want[0]["fc.weight"])


def mlp_graph() -> Graph:
    mlp = {"image_size": 8, "hidden": 16}
    nodes = [Node(n, "mlp", mlp) for n in ("a", "b")]
    edges = [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("b", "a", "kl", Gate("correct")),
             Edge("a", "b", "kl", T=2.0)]
    return Graph(nodes, edges, "a", name="two-mlp")


def _mesh_steps(rank, world, out_dir):
    tr = Trainer(mlp_graph(), tiny_data(), config(os.path.join(out_dir, f"r{rank}"), batch_size=B // 2))
    p = tr.step.placement
    assert (p.node_shards, p.data_replicas) == (2, 2)
    d = tr.step.groups.data_rank
    for x, y in batches(tiny_data()):
        tr.train_step(x.chunk(2)[d], y.chunk(2)[d])
    tr.step.end_training_period()
    torch.save([m.state_dict() for m in tr.models], os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_more_ranks_than_nodes_is_a_data_by_node_mesh(tmp_path):
    """4 ranks, 2 nodes: 2 node shards x 2 data replicas (DDP over the mesh's
    data group) equals one process on the global batch (MLPs: no BatchNorm,
    so data parallel is exact up to the all-reduce's rounding)."""
    spawn(_mesh_steps, 4, str(tmp_path))
    want, _ = single_process(str(tmp_path / "single"), mlp_graph(), tiny_data())
    for rank in range(4):
        assert_states_close(torch.load(tmp_path / f"rank{rank}.pt"), want, f"rank {rank}",
                            atol=1e-6, rtol=1e-5)


def _refused(rank, world, out_dir):
    with pytest.raises(ValueError, match=r"WORLD_SIZE=3 does not split the graph's 2 model nodes"):
        Trainer(mlp_graph(), tiny_data(), config(os.path.join(out_dir, f"r{rank}")))


@pytest.mark.slow
def test_a_world_that_does_not_split_the_nodes_is_refused(tmp_path):
    spawn(_refused, 3, str(tmp_path))


def _fit(rank, world, out, epochs, resume):
    Trainer(graph(), data(), config(out, epochs=epochs, augment="crop_flip"), resume=resume).fit()


@pytest.mark.slow
def test_spread_fit_checkpoints_and_resumes_like_one_process(tmp_path):
    """The run loop on 2 ranks: one epoch, then a resume for the second; the
    run folder's checkpoint holds every node and equals one process's."""
    out = str(tmp_path / "spread")
    spawn(_fit, 2, out, 1, False)
    spawn(_fit, 2, out, 2, True)
    # the same in one process (epochs 1, then a resume to 2: a linear gate's progress
    # follows the budget of each launch)
    for epochs, resume in ((1, False), (2, True)):
        single = Trainer(graph(), data(), config(str(tmp_path / "single"), "replicate", epochs=epochs,
                                                 augment="crop_flip"), resume=resume)
        single.fit()
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    assert state["epoch"] == 2 and len(state["models"]) == 4
    assert_states_close(state["models"], [m.state_dict() for m in single.models], "checkpoint")
    for got, want in zip(state["history"], single.history):
        for k in want:
            if k.startswith(("train_loss:", "val_acc:")):
                assert got[k] == pytest.approx(want[k], abs=1e-4), k
    assert "placement" in open(os.path.join(out, "config.yaml")).read()


@pytest.mark.slow
def test_torchrun_spread_from_the_cli_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "ktgfast", "train", "--placement", "spread", "--graph", "dml",
           "--graph-arg", "model=cnn_small", "--data", "mnist5k", "--epochs", "1", "--batch-size", "32",
           "--device", "cpu", "--tensorboard", "false", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_acc:node0" in rows[0] and "train_loss:node1" in rows[0]
    assert "data_replicas" in (out / "config.yaml").read_text()
    # a normal run folder: ktgfast analyze reads it
    proc = subprocess.run([sys.executable, "-m", "ktgfast", "analyze", str(out), "--no-plots",
                           "--split", "val"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
