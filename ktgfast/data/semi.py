"""Data of semi-supervised training: the labelled / unlabelled split and an
endless, seekable stream of (multi-view) batches.

``split_labeled`` takes ``per_class`` images of every class (seeded, stratified)
as the labelled set; the rest of the training split is the unlabelled set,
whose labels are replaced by ``HIDDEN_LABEL`` so no loss can read them.  The
validation split is carved from the training data *before* this (it is not
in ``split``); the test split is never passed here.

``ViewStream`` serves batch ``k = 0, 1, 2, ...`` of an endless sequence of
epochs: epoch ``e`` is a permutation of the split seeded by ``(seed, e)`` and
the stream is those permutations end to end, batch ``k`` being positions
``[kB, (k+1)B)``.  A batch may straddle two epochs, and a batch larger than
the split simply spans several (tiny labelled sets, e.g. 4 labels per class
with batch 64).  Every view of a sample is its own draw: ``weak`` (crop/flip
from one generator stream), ``weak2`` (crop/flip from another) and
``strong`` (crop/flip from a third, then RandAugment), all drawn per epoch
from generators seeded by ``(seed, stream, epoch)``.  So batch ``k`` depends
on ``k`` only: a resumed run seeks to its step and sees the same images.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .augment import Augment
from .randaugment import RandAugment
from .split import Split
from .tensor_loader import TensorLoader, _generator

VIEWS = ("weak", "weak2", "strong")  # = ktgfast.graph.ssl.VIEWS
HIDDEN_LABEL = -1                     # the label every unlabelled sample carries
_WEAK2 = 3                            # generator stream of the second weak draw


def split_labeled(split: Split, per_class: int, seed: int = 0) -> tuple[Split, Split]:
    """``(labelled, unlabelled)``: ``per_class`` samples of every class, chosen
    by a generator seeded with ``seed``; the unlabelled part is every other
    sample, with labels ``HIDDEN_LABEL`` (ids kept).  Both keep the original
    sample order."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"labels_per_class must be an integer >= 1, got {per_class!r}")
    classes, sizes = torch.unique(split.labels, return_counts=True)
    small = [(int(c), int(s)) for c, s in zip(classes, sizes) if s < per_class]
    if small:
        c, s = small[0]
        raise ValueError(f"labels_per_class = {per_class} but class {c} has only {s} training "
                         f"images; allowed: at most {int(sizes.min())}")
    gen = torch.Generator().manual_seed(seed)
    labeled = torch.zeros(len(split), dtype=torch.bool)
    for c in classes.tolist():
        members = torch.nonzero(split.labels == c).flatten()
        labeled[members[torch.randperm(len(members), generator=gen)[:per_class]]] = True
    return split.subset(torch.nonzero(labeled).flatten()), hide_labels(
        split.subset(torch.nonzero(~labeled).flatten()))


def hide_labels(split: Split) -> Split:
    """``split`` with every label (fine and coarse) replaced by ``HIDDEN_LABEL``."""
    return Split(split.images, torch.full_like(split.labels, HIDDEN_LABEL), None, split.ids)


class ViewStream:
    """Batches ``(views, y, idx)`` of ``split``: ``views`` maps each name in
    ``views`` to a float32 normalised ``(B, C, H, W)`` tensor on ``device``;
    ``y`` int64 labels; ``idx`` row indices into ``split``.  ``batch(k)`` is
    batch ``k`` (see the module doc); ``strong`` (a RandAugment) is needed
    for the ``strong`` view."""

    def __init__(self, split: Split, batch_size: int, *, views: Sequence[str] = ("weak",),
                 augment: Optional[Augment], strong: Optional[RandAugment] = None,
                 mean: Sequence[float], std: Sequence[float], device="cpu", seed: int = 0,
                 channels_last: bool = False):
        unknown = [v for v in views if v not in VIEWS]
        if unknown or not views:
            raise ValueError(f"views {list(views)}: expected some of {', '.join(VIEWS)}")
        if "strong" in views and strong is None:
            raise ValueError("the strong view needs a RandAugment spec (strong=RandAugment(...))")
        if len(split) == 0:
            raise ValueError("cannot stream an empty split")
        # The TensorLoader holds the device copy and does the per-epoch
        # order, crop/flip and RandAugment draws (same generator streams).
        self.loader = TensorLoader(split, batch_size, shuffle=True, drop_last=False,
                                   augment=augment, mean=mean, std=std, device=device, seed=seed,
                                   channels_last=channels_last, strong=strong)
        self.views = tuple(views)
        self.batch_size = batch_size
        self.n = len(split)
        self._epochs: dict[int, dict] = {}

    def _epoch(self, e: int) -> dict:
        """Order and view parameters of epoch ``e`` (the last two are kept)."""
        if e not in self._epochs:
            ld, dev = self.loader, self.loader.device
            order = ld.order(e)
            d = {"order": order.to(dev)}
            if "weak" in self.views:
                p = ld.augment_params(e, self.n)
                d["weak"] = None if p is None else p.to(dev)
            if "weak2" in self.views and ld.augment is not None:
                d["weak2"] = ld.augment.sample(self.n, _generator(ld.seed, _WEAK2, e, ld.rank)).to(dev)
            else:
                d["weak2"] = None
            if "strong" in self.views:
                crop, ra = ld.strong_params(e, self.n)
                d["strong"] = (None if crop is None else crop.to(dev), ra)
            for old in [k for k in self._epochs if k < e - 1]:
                del self._epochs[old]
            self._epochs[e] = d
        return self._epochs[e]

    def _segment(self, e: int, a: int, b: int):
        """Views, labels and indices of positions ``a:b`` of epoch ``e``."""
        ld, d = self.loader, self._epoch(e)
        sl = slice(a, b)
        idx = d["order"][sl]
        x = ld.images.index_select(0, idx)
        out = {}
        for v in self.views:
            if v == "strong":
                crop, ra = d["strong"]
                xs = ld._crop(x, None if crop is None else crop.take(sl))
                out[v] = ld.strong.apply(xs, ra.take(sl))
            else:
                p = d[v]
                out[v] = ld._crop(x, None if p is None else p.take(sl))
        return out, ld.labels.index_select(0, idx), idx

    def batch(self, k: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        start, stop = k * self.batch_size, (k + 1) * self.batch_size
        parts = []
        while start < stop:
            e, a = divmod(start, self.n)
            b = min(self.n, a + stop - start)
            parts.append(self._segment(e, a, b))
            start += b - a
        if len(parts) == 1:
            views, y, idx = parts[0]
        else:
            views = {v: torch.cat([p[0][v] for p in parts]) for v in self.views}
            y, idx = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
        return {v: self.loader.normalize(x) for v, x in views.items()}, y, idx

    def __len__(self) -> int:
        """Batches per pass over the split (at least 1)."""
        return max(1, self.n // self.batch_size)
