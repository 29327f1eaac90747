"""One split of an in-memory dataset, and the stratified carving of a validation
split out of training data (searches score on it; the test split is never used)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Split:
    """Images and labels of one split, all on the host (loaders move them).

    ``images``: uint8 ``(N, C, H, W)``; ``labels``: int64 ``(N,)``;
    ``coarse_labels``: int64 ``(N,)`` superclass of each sample, when known;
    ``ids``: int64 ``(N,)`` stable sample ids, unique within a dataset and kept
    through carving, so per-sample banks survive a re-split.
    """

    images: torch.Tensor
    labels: torch.Tensor
    coarse_labels: Optional[torch.Tensor] = None
    ids: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"Split.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        n = self.images.shape[0]
        for name in ("labels", "coarse_labels", "ids"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dtype != torch.int64 or t.shape != (n,):
                raise ValueError(f"Split.{name} must be int64 ({n},), got {t.dtype} {tuple(t.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "Split":
        """The samples at ``index`` (a new Split; optional fields follow)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Split(self.images[index], self.labels[index], pick(self.coarse_labels),
                     pick(self.ids))


def concat_splits(parts: list[Split]) -> Split:
    """Concatenate splits; an optional field survives only if every part has it."""
    def cat(name: str):
        ts = [getattr(p, name) for p in parts]
        return None if any(t is None for t in ts) else torch.cat(ts)

    return Split(cat("images"), cat("labels"), cat("coarse_labels"), cat("ids"))


def _val_count(val_size: int | float, n: int) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ValueError(f"val_size must be an int (count) or a float (fraction), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"a fractional val_size must lie in (0, 1), got {val_size}")
        val_size = round(val_size * n)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must leave both parts non-empty: got {val_size} of {n} samples")
    return int(val_size)


def stratified_counts(labels: torch.Tensor, total: int) -> dict[int, int]:
    """Samples to take from each class so that ``total`` is split in proportion
    to the class sizes (largest remainder; ties go to the smaller class id)."""
    classes, sizes = torch.unique(labels, return_counts=True)
    n = int(sizes.sum())
    quotas = [total * int(s) / n for s in sizes]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(counts)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return {int(c): k for c, k in zip(classes, counts)}


def carve_validation(split: Split, val_size: int | float, seed: int = 0) -> tuple[Split, Split]:
    """``(train, val)`` carved from ``split``, stratified by class.

    ``val_size``: an int is a number of samples, a float a fraction of ``split``.
    Which samples go to val depends only on ``(labels, val_size, seed)``; both
    parts keep the original sample order (and ids).  Never pass a test split.
    """
    n = len(split)
    k = _val_count(val_size, n)
    gen = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(n, dtype=torch.bool)
    for c, take in stratified_counts(split.labels, k).items():
        members = torch.nonzero(split.labels == c).flatten()
        is_val[members[torch.randperm(len(members), generator=gen)[:take]]] = True
    return split.subset(torch.nonzero(~is_val).flatten()), split.subset(torch.nonzero(is_val).flatten())
