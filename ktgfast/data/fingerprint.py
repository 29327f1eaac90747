"""A content hash of a split: what identifies a training set across runs (the
pretrain cache key, honest resume)."""
from __future__ import annotations

import hashlib


def data_fingerprint(split) -> str:
    """Content hash of a training split (images and labels), memoised on it."""
    cached = getattr(split, "_ktg_fingerprint", None)
    if cached is None:
        h = hashlib.sha256()
        h.update(split.images.contiguous().cpu().numpy().tobytes())
        h.update(split.labels.contiguous().cpu().numpy().tobytes())
        cached = h.hexdigest()[:16]
        try:
            object.__setattr__(split, "_ktg_fingerprint", cached)
        except AttributeError:
            pass
    return cached


__all__ = ["data_fingerprint"]
