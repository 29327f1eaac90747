"""Node parallel (``--placement spread``, docs/node_parallel.md): which rank
trains which node, the process groups of a (data x node) device mesh, the
one all-gather per step of the nodes' outputs, and the broadcasts that keep
every rank's copy of every node current at period ends.

Ranks form a row-major ``(D, N)`` mesh: rank ``r`` is node shard ``r % N``
of data replica ``r // N``.  Node shard ``n`` trains the nodes placed on
``n``; the ``D`` replicas of a shard see different batch shards and
all-reduce their gradients (DDP over the mesh's ``data`` group).  ``D = 1``
unless the launch has more ranks than the graph has model nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# torch >= 2.x renamed all_gather_into_tensor to all_gather_single
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class NodePlacement:
    """``owner[i]``: the node shard that trains graph node ``i`` (None for an
    ensemble node: computed on every rank from its members' logits).
    ``node_shards`` x ``data_replicas`` = WORLD_SIZE."""

    owner: tuple[int | None, ...]
    node_shards: int
    data_replicas: int
    source: str  # "round-robin" or "graph" (the nodes' rank keys)

    @classmethod
    def of(cls, graph, world_size: int) -> "NodePlacement":
        """The placement of ``graph`` on ``world_size`` ranks, or one ValueError
        line saying why not and what to launch instead."""
        model = [i for i, n in enumerate(graph.nodes) if not n.is_ensemble]
        m = len(model)
        owner: list[int | None] = [None] * len(graph.nodes)
        if all(graph.nodes[i].rank is None for i in model):
            shards, source = min(world_size, m), "round-robin"
            if world_size % shards:
                raise ValueError(
                    f"--placement spread: WORLD_SIZE={world_size} does not split the graph's {m} model "
                    f"nodes: launch at most {m} processes (the nodes spread round-robin over the ranks) "
                    f"or a multiple of {m} ({m} node shards x WORLD_SIZE/{m} data replicas, a 2-D "
                    f"device mesh), e.g. --nproc-per-node {m} or {2 * m}")
            for k, i in enumerate(model):
                owner[i] = k % shards
        else:
            source = "graph"
            for i in model:
                r = graph.nodes[i].rank
                if not 0 <= r < world_size:
                    raise ValueError(f"graph.nodes[{i}].rank: {r} for node {graph.nodes[i].name!r} but "
                                     f"WORLD_SIZE={world_size}; allowed: 0..{world_size - 1}")
                owner[i] = r
            shards = max(owner[i] for i in model) + 1
            empty = sorted(set(range(shards)) - {owner[i] for i in model})
            if empty:
                raise ValueError(f"graph nodes' rank: rank {empty[0]} trains no node (the ranks used are "
                                 f"{sorted({owner[i] for i in model})}); number the ranks 0..k-1 without gaps")
            if world_size % shards:
                raise ValueError(
                    f"--placement spread: the graph places its nodes on {shards} ranks but WORLD_SIZE="
                    f"{world_size} is not a multiple of {shards} (node shards x data replicas); launch "
                    f"{shards} or {2 * shards} processes, or change the nodes' rank keys")
        return cls(tuple(owner), shards, world_size // shards, source)

    def nodes_of(self, shard: int) -> list[int]:
        return [i for i, o in enumerate(self.owner) if o == shard]

    def describe(self, names: list[str]) -> dict:
        """For the run folder's config.yaml (resolved section)."""
        return {"nodes": {n: o for n, o in zip(names, self.owner) if o is not None},
                "node_shards": self.node_shards, "data_replicas": self.data_replicas,
                "from": self.source}


class MeshGroups:
    """This rank's place in the ``(data, node)`` mesh and its two groups:
    ``node`` (the ranks of one data replica, which exchange outputs) and
    ``data`` (the replicas of one node shard, which all-reduce gradients;
    None when ``D = 1``).  With one rank in a dimension its group is None."""

    def __init__(self, placement: NodePlacement, rank: int, world_size: int, device: torch.device):
        n, d = placement.node_shards, placement.data_replicas
        self.node_rank, self.data_rank = rank % n, rank // n
        self.node = self.data = None
        if world_size == 1:
            return
        if d == 1:
            self.node = dist.group.WORLD
            return
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (d, n), mesh_dim_names=("data", "node"))
        self.node = mesh.get_group("node") if n > 1 else None
        self.data = mesh.get_group("data")


class OutputExchange:
    """One all-gather per step of every node shard's outputs.

    Rank layout (one flat buffer per rank, all ranks padded to the longest):
    the logits ``(B, C)`` of the shard's model nodes in node order, then
    (with attention edges) their attention maps ``(B, H, W)`` in node order,
    in one dtype (the promotion of the logits' and maps' dtypes; every part
    is cast back).  A shard's layout follows from (B, C, H, W) and the
    placement, which every rank knows, so nothing but the payload moves; the
    first exchange checks once that every rank agrees on them."""

    def __init__(self, placement: NodePlacement, node_rank: int, group, maps: bool):
        self.shards = [placement.nodes_of(s) for s in range(placement.node_shards)]
        self.own = self.shards[node_rank]
        self.group, self.maps = group, maps
        self.checked = group is None

    def _signature(self, logits: dict, maps: dict) -> tuple:
        sigs = set()
        for i in self.own:
            z, a = logits[i], maps.get(i)
            sigs.add((tuple(z.shape), str(z.dtype)) + ((tuple(a.shape), str(a.dtype)) if self.maps else ()))
        if len(sigs) != 1:
            raise RuntimeError(f"--placement spread: the nodes of one rank give outputs of different "
                               f"shapes or dtypes {sorted(sigs)}; the exchange needs one (B, C) logits "
                               "shape and one attention-map shape")
        return sigs.pop()

    def _check(self, sig: tuple) -> None:
        got: list = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(got, sig, group=self.group)
        if len(set(got)) != 1:
            raise RuntimeError(f"--placement spread: ranks give outputs of different shapes or dtypes "
                               f"{got}; every node must give (B, C) logits and maps of one shape")
        self.checked = True

    def exchange(self, logits: list, maps: list) -> None:
        """Fill the other shards' entries of ``logits`` and ``maps`` (lists by
        graph node; this rank's own entries are set, with their autograd
        history) with the gathered outputs, detached."""
        if self.group is None:
            return
        if not self.checked:  # once: shapes are fixed (drop_last batches)
            own_maps = {i: maps[i] for i in self.own} if self.maps else {}
            self._check(self._signature({i: logits[i] for i in self.own}, own_maps))
        ref_z = logits[self.own[0]]
        ref_a = maps[self.own[0]] if self.maps else None
        dtype = ref_z.dtype if ref_a is None else torch.promote_types(ref_z.dtype, ref_a.dtype)
        zn, an = ref_z.numel(), (ref_a.numel() if ref_a is not None else 0)
        length = max(len(s) for s in self.shards) * (zn + an)
        send = torch.zeros(length, dtype=dtype, device=ref_z.device)
        k = len(self.own)
        for j, i in enumerate(self.own):
            send[j * zn:(j + 1) * zn].copy_(logits[i].detach().reshape(-1))
            if ref_a is not None:
                send[k * zn + j * an:k * zn + (j + 1) * an].copy_(maps[i].detach().reshape(-1))
        recv = send.new_empty(len(self.shards) * length)
        _all_gather_single(recv, send, group=self.group)
        for s, nodes in enumerate(self.shards):
            if nodes is self.own:
                continue
            buf, k = recv[s * length:(s + 1) * length], len(nodes)
            for j, i in enumerate(nodes):
                logits[i] = buf[j * zn:(j + 1) * zn].view(ref_z.shape).to(ref_z.dtype)
                if ref_a is not None:
                    maps[i] = buf[k * zn + j * an:k * zn + (j + 1) * an].view(ref_a.shape).to(ref_a.dtype)


# ---------------------------------------------------------------------------
# Keeping every rank's copy of every node current (at construction and at
# period ends): parameters, buffers and optimizer state from the owner.

def broadcast_tensors(tensors: list[torch.Tensor], src: int, device: torch.device) -> None:
    """Every rank's ``tensors`` become rank ``src``'s, in place: one flat
    buffer (so one broadcast) per dtype."""
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for ts in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1).to(device) for t in ts])
        dist.broadcast(flat, src)
        if dist.get_rank() == src:
            continue
        with torch.no_grad():
            for t, v in zip(ts, flat.split([t.numel() for t in ts])):
                t.copy_(v.view_as(t))


def broadcast_module(model: nn.Module, src: int, device: torch.device) -> None:
    """Rank ``src``'s parameters and buffers of ``model`` on every rank."""
    broadcast_tensors(list(model.state_dict().values()), src, device)


def broadcast_optimizer(opt: torch.optim.Optimizer, src: int, device: torch.device) -> None:
    """Rank ``src``'s optimizer state (e.g. SGD momentum buffers) on every rank.
    Its structure (which states exist, their shapes) goes as one small object,
    the tensors as flat broadcasts; hyper-parameters are equal already (every
    rank steps every schedule)."""
    me = dist.get_rank()
    tensors: list[torch.Tensor] = []

    def strip(v):
        if isinstance(v, torch.Tensor):
            tensors.append(v)
            return ("__tensor__", len(tensors) - 1, tuple(v.shape), v.dtype)
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()}
        return v

    payload = [strip(opt.state_dict()["state"]) if me == src else None]
    dist.broadcast_object_list(payload, src=src, device=device if device.type == "cuda" else None)
    meta = payload[0]
    if me != src:
        def shapes(v):
            if isinstance(v, tuple) and len(v) == 4 and v[0] == "__tensor__":
                tensors.append(torch.empty(v[2], dtype=v[3], device=device))
            elif isinstance(v, dict):
                for x in v.values():
                    shapes(x)
        shapes(meta)
    if tensors:
        broadcast_tensors(tensors, src, device)
    if me == src:
        return

    def fill(v):
        if isinstance(v, tuple) and len(v) == 4 and v[0] == "__tensor__":
            return tensors[v[1]]
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v

    state = opt.state_dict()
    state["state"] = fill(meta)
    opt.load_state_dict(state)


__all__ = ["MeshGroups", "NodePlacement", "OutputExchange", "broadcast_module", "broadcast_optimizer",
           "broadcast_tensors"]
