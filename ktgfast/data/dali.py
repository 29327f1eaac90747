"""NVIDIA DALI input pipelines: in-memory uint8 splits and image-file folders.

``DaliLoader`` keeps the iteration contract of ``TensorLoader``: it yields
``(x, y, idx)`` with ``x`` float32 normalised ``(B, C, H, W)`` on ``device``,
``y`` int64 labels and ``idx`` int64 row indices into the source (``split.ids[idx]``
or ``files[idx]``), or ``(x_weak, x_strong, y, idx)`` when a strong view is asked
for (``strong=RandAugmentSpec(n, m)``; both views come from the same samples in
one pipeline pass, for semi-supervised edges).

Sources
    * a ``Split`` (uint8 ``(N, C, H, W)`` in host memory): batches are gathered
      here and fed through ``fn.external_source`` (on a GPU the pipeline copies
      each batch up with ``.gpu()``; for plain crop/flip of small in-memory data
      the device-resident ``TensorLoader`` is the faster path, DALI pays off
      for RandAugment and file datasets);
    * an ``ImageFiles`` list or a folder ``root/<class>/*.{png,jpg,jpeg}``
      (``DaliLoader.from_folder``): ``fn.readers.file`` reads the epoch's file
      list in our order, ``fn.decoders.image`` (``device="mixed"`` on a GPU:
      nvJPEG) decodes, or ``fn.decoders.image_random_crop`` decodes only the
      random-resized-crop window when one view is needed.

Augmentation (``eval=False``), per view, on HWC uint8 images
    * no ``crop_size``: pad ``augment.pad`` px (``reflect`` | ``zero``, as in
      ``augment.py``) + random crop back to the input size, as one ``fn.slice``
      with an integer anchor in ``[-pad, pad]`` and an out-of-bounds policy;
    * ``crop_size``: random-resized crop (``scale``, ``ratio``) to ``crop_size``
      (224-px datasets);
    * strong view only: RandAugment (``nvidia.dali.auto_aug.rand_augment``);
    * horizontal flip with p = 0.5 (``fn.random.coin_flip`` -> ``mirror``) and
      normalisation, fused in ``fn.crop_mirror_normalize`` (float32, CHW).
    Without ``augment`` (or in eval mode): optional ``resize`` of the short side,
    then a centre crop to ``crop_size`` (anchor ``(H - h) // 2``, as in
    ``imagefolder.py``), then normalisation.

Order, sharding, last batch, seeds: exactly those of ``TensorLoader`` (its
``(seed, epoch)`` permutation, the same on every rank; rank ``r`` takes the
``r``-th contiguous chunk; ``drop_last`` trims the epoch to a multiple of
``world_size`` and drops the short batch, otherwise the last batch is smaller
and covers the remainder exactly).  The order is decided here, never by DALI's
buffer shuffle or reader sharding (which pads shards with repeated samples).
DALI's random operators are seeded per epoch from ``(seed, epoch, rank)``: the
pipeline is rebuilt at the start of every epoch, so ``set_epoch(e)`` reproduces
epoch ``e`` bit for bit on the same device kind, whatever ran before (a
rebuild costs ~10 ms, ~0.5 s with RandAugment, whose graph DALI traces with
conditionals enabled: once per epoch, not per batch).  Each
batch's ``idx`` travels through the pipeline beside its images (as the
external source's second output or the reader's label) and is checked against
the expected order, so labels cannot drift from images.

DALI is optional: importing this module does not import it.  ``dali_available()``
tells whether it can be imported and ``require_dali()`` raises an ImportError
that says how to install it; without DALI use ``TensorLoader``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .augment import Augment
from .imagefolder import EXTENSIONS
from .loader_common import EpochMixin, check_loader_args, check_norm, shard_size
from .split import Split
from .tensor_loader import _ORDER, _generator

INSTALL_HINT = "pip install nvidia-dali-cuda130"
_DALI_STREAM = 7  # seed word of DALI's random operators (TensorLoader's streams are 0, 1, 2)
_PAD_POLICY = {"reflect": "reflect_101", "zero": "constant"}  # augment.py -> fn.slice


# --------------------------------------------------------------------------- optional import

def require_dali():
    """Import and return ``nvidia.dali``; raise an ImportError that says how to
    install it when it is missing or broken."""
    try:
        import nvidia.dali as dali
    except (ImportError, OSError) as exc:
        raise ImportError(
            "ktgfast's DALI loaders need NVIDIA DALI, which could not be imported "
            f"({type(exc).__name__}: {exc}). Install it with `{INSTALL_HINT}` (the CUDA 13 "
            "wheel; it also runs CPU-only pipelines) or `pip install 'ktgfast[dali]'`, "
            "or use ktgfast.data.TensorLoader instead.") from exc
    return dali


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be imported (imports it when it can)."""
    try:
        require_dali()
    except ImportError:
        return False
    return True


_API: Optional[SimpleNamespace] = None


def _api() -> SimpleNamespace:
    global _API
    if _API is None:
        require_dali()
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.auto_aug import rand_augment
        from nvidia.dali.plugin.pytorch import feed_ndarray
        _API = SimpleNamespace(fn=fn, types=types, pipeline_def=pipeline_def,
                               rand_augment=rand_augment, feed_ndarray=feed_ndarray)
    return _API


# --------------------------------------------------------------------------- specs and sources

# nvidia.dali.auto_aug.rand_augment.get_rand_augment_suite(), by name
DALI_RANDAUGMENT_OPS = ("translate_x", "translate_y", "shear_x", "shear_y", "rotate", "brightness",
                        "contrast", "color", "sharpness", "posterize", "solarize", "equalize",
                        "auto_contrast", "identity")


@dataclass(frozen=True)
class RandAugmentSpec:
    """RandAugment of the strong view: ``n`` operations per sample, each at
    magnitude bin ``m`` of ``num_magnitude_bins`` (DALI's suite: translate,
    shear, rotate, brightness, contrast, color, sharpness, posterize, solarize,
    equalize, auto-contrast, identity; ``excluded`` removes some by name)."""

    n: int = 2
    m: int = 9
    num_magnitude_bins: int = 31
    fill_value: Optional[int] = 128
    monotonic_mag: bool = True
    excluded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"RandAugment n must be an int >= 1, got {self.n!r}")
        if not isinstance(self.num_magnitude_bins, int) or self.num_magnitude_bins < 1:
            raise ValueError(f"num_magnitude_bins must be an int >= 1, got {self.num_magnitude_bins!r}")
        if not isinstance(self.m, int) or not 0 <= self.m < self.num_magnitude_bins:
            raise ValueError(f"RandAugment m must be an int in [0, {self.num_magnitude_bins - 1}], "
                             f"got {self.m!r}")
        object.__setattr__(self, "excluded", tuple(self.excluded))
        unknown = sorted(set(self.excluded) - set(DALI_RANDAUGMENT_OPS))
        if unknown:
            raise ValueError(f"unknown RandAugment op(s) {unknown}; DALI's suite has "
                             f"{', '.join(DALI_RANDAUGMENT_OPS)}")

    @classmethod
    def coerce(cls, spec) -> "RandAugmentSpec":
        """A ``RandAugmentSpec``, or one made from another spec with ``n`` and
        ``m`` on the same 0..30 scale (e.g. ``ktgfast.data.randaugment``'s), its
        ``fill`` and its ``ops`` (names compared without underscores)."""
        if isinstance(spec, cls):
            return spec
        if not (hasattr(spec, "n") and hasattr(spec, "m")):
            raise TypeError(f"strong must be a RandAugmentSpec (n, m), got {spec!r}")
        if getattr(spec, "random_magnitude", False):
            raise ValueError("DALI's RandAugment uses a fixed magnitude: random_magnitude "
                             "is not supported")
        if float(spec.m) != int(spec.m):
            raise ValueError(f"DALI's RandAugment needs an integer magnitude bin, got m={spec.m}")
        excluded: tuple[str, ...] = ()
        ops = getattr(spec, "ops", None)
        if ops is not None:
            keep = {str(o).replace("_", "") for o in ops}
            excluded = tuple(o for o in DALI_RANDAUGMENT_OPS if o.replace("_", "") not in keep)
        fill = getattr(spec, "fill", cls.fill_value)
        return cls(n=int(spec.n), m=int(spec.m), fill_value=fill, excluded=excluded)


@dataclass(frozen=True)
class ImageFiles:
    """Image files with labels: the file source of ``DaliLoader``."""

    files: tuple[str, ...]
    labels: torch.Tensor              # int64 (N,)
    classes: tuple[str, ...] = ()
    channels: int = 3                 # 3: RGB, 1: grayscale

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        n = len(self.files)
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise ValueError(f"ImageFiles.labels must be int64 ({n},), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if n == 0:
            raise ValueError("ImageFiles needs at least one file")

    def __len__(self) -> int:
        return len(self.files)

    @classmethod
    def scan(cls, folder: Union[str, os.PathLike], classes: Optional[Sequence[str]] = None,
             channels: int = 3) -> "ImageFiles":
        """``folder/<class>/*.{png,jpg,jpeg}``; classes are the sorted sub-folder
        names unless given (pass the train split's classes for val/test folders,
        so label ids agree).  Files are sorted within each class."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder (expected {folder}/<class>/*.png|jpg)")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if classes is None:
            classes = found
        classes = list(classes)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{folder}: class folders {unknown} are not among the classes {classes}")
        files, labels = [], []
        for c, name in enumerate(classes):
            d = folder / name
            if d.is_dir():
                got = sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
                files += [str(p) for p in got]
                labels += [c] * len(got)
        if not files:
            raise FileNotFoundError(f"{folder}: no {'/'.join(EXTENSIONS)} images in any class folder")
        return cls(tuple(files), torch.tensor(labels, dtype=torch.int64), tuple(classes), channels)


Source = Union[Split, ImageFiles, str, os.PathLike]


# --------------------------------------------------------------------------- the loader

class DaliLoader(EpochMixin):
    """DALI batches of a ``Split`` or of ``ImageFiles`` (see the module doc).

    ``augment``: the weak view's ``Augment`` (pad/crop/flip; with ``crop_size``
    its ``crop`` means random-resized crop and ``pad`` is unused).  ``strong``:
    a ``RandAugmentSpec`` (or a spec ``RandAugmentSpec.coerce`` accepts) adds
    a second view: an independent draw of the weak view's crop, then
    RandAugment, then its own flip (``views`` is then ``("weak", "strong")``;
    passing that ``views`` alone uses ``RandAugmentSpec()``).
    ``crop_size``: output side length (random-resized crop in training, centre
    crop otherwise); ``resize``: short side before the centre crop (e.g. 256 for
    224 crops; with no ``crop_size`` the crop is ``resize`` square).  ``eval``:
    no augmentation, no shuffle, nothing dropped.  ``device``: ``"cpu"`` runs a
    CPU-only pipeline (``device_id=None``); ``"cuda[:k]"`` runs GPU operators
    (mixed decoding) on that GPU.  ``channels_last``: ``x`` in channels-last
    memory format (free: the pipeline writes HWC).
    """

    def __init__(self, source: Source, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, augment: Optional[Augment] = None,
                 strong: Optional[RandAugmentSpec] = None, views: Optional[Sequence[str]] = None,
                 mean: Sequence[float], std: Sequence[float], device="cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, crop_size: Optional[int] = None,
                 resize: Optional[int] = None, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), eval: bool = False,
                 channels_last: bool = False, num_threads: Optional[int] = None,
                 prefetch: int = 2):
        require_dali()
        if isinstance(source, (str, os.PathLike)):
            source = ImageFiles.scan(source)
        if not isinstance(source, (Split, ImageFiles)):
            raise TypeError(f"source must be a Split, ImageFiles or a folder, got {type(source).__name__}")
        check_loader_args(batch_size, rank, world_size, seed)
        for name, v in (("crop_size", crop_size), ("resize", resize)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                             f"got scale={scale}, ratio={ratio}")
        if views is not None:
            views = tuple(views)
            if views not in (("weak",), ("weak", "strong")):
                raise ValueError(f"views must be ('weak',) or ('weak', 'strong'), got {views}")
            if views == ("weak",) and strong is not None:
                raise ValueError("views=('weak',) contradicts a strong RandAugmentSpec")
            if views == ("weak", "strong") and strong is None:
                strong = RandAugmentSpec()
        if eval:
            shuffle, drop_last, augment, strong = False, False, None, None
        if strong is not None:
            strong = RandAugmentSpec.coerce(strong)

        self.source = source
        self.is_files = isinstance(source, ImageFiles)
        if self.is_files:
            C, self.image_hw = source.channels, None
            self.files = source.files
            self.classes = source.classes
        else:
            C, H, W = source.images.shape[1:]
            self.image_hw = (H, W)
            self.classes = ()
            # HWC once, on the host: the pipeline's layout; batches are gathers from it
            self._hwc = source.images.permute(0, 2, 3, 1).contiguous().numpy()
        check_norm(mean, std, C)
        if strong is not None and C != 3:
            raise ValueError("RandAugment (strong view) needs RGB images (3 channels)")
        self.channels = C
        self.augment = augment if augment is not None and augment.active else None
        self.strong = strong
        if (self.augment is not None and crop_size is None and self.augment.crop
                and self.augment.pad > 0 and self.augment.pad_mode == "reflect"
                and self.image_hw is not None and self.augment.pad >= min(self.image_hw)):
            raise ValueError(f"reflect padding {self.augment.pad} is too large for "
                             f"{self.image_hw[0]}x{self.image_hw[1]} images")
        if crop_size is None and resize is not None:
            crop_size = resize
        self.crop_size, self.resize, self.scale, self.ratio = crop_size, resize, tuple(scale), tuple(ratio)
        self.is_eval = eval

        self.device = torch.device(device)
        self.gpu = self.device.type == "cuda"
        if self.gpu:
            idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", idx)
            self.device_id: Optional[int] = idx
        elif self.device.type == "cpu":
            self.device_id = None
        else:
            raise ValueError(f"device must be cpu or cuda, got {self.device}")
        self.labels = source.labels.to(self.device)
        self._n = len(source.labels)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.channels_last = channels_last
        self.num_threads = num_threads or max(1, min(4, os.cpu_count() or 1))
        self.prefetch = prefetch
        self.epoch = 0

    # ---- constructors

    @classmethod
    def from_folder(cls, folder: Union[str, os.PathLike], batch_size: int, *,
                    classes: Optional[Sequence[str]] = None, channels: int = 3,
                    **kwargs) -> "DaliLoader":
        """Loader over ``folder/<class>/*.{png,jpg,jpeg}`` (e.g. ``root/train``);
        ``classes`` fixes the label ids (pass the train classes for val/test)."""
        require_dali()
        return cls(ImageFiles.scan(folder, classes, channels), batch_size, **kwargs)

    @classmethod
    def eval(cls, source: Source, batch_size: int, **kwargs) -> "DaliLoader":
        """Evaluation mode: no augmentation, no shuffle, no dropped samples."""
        return cls(source, batch_size, eval=True, **kwargs)

    # ---- the TensorLoader contract

    @property
    def views(self) -> tuple[str, ...]:
        return ("weak", "strong") if self.strong is not None else ("weak",)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a short batch)."""
        return shard_size(self._n, self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch`` (CPU int64), in batch order
        (``TensorLoader.order`` for the same arguments)."""
        n = self._n
        perm = (torch.randperm(n, generator=_generator(self.seed, _ORDER, epoch))
                if self.shuffle else torch.arange(n))
        if self.drop_last:
            perm = perm[: self.world_size * (n // self.world_size)]
        return perm.tensor_split(self.world_size)[self.rank]

    def pipeline_seed(self, epoch: int) -> int:
        """Seed of the DALI pipeline of ``epoch`` on this rank."""
        state = np.random.SeedSequence([self.seed, _DALI_STREAM, epoch, self.rank])
        return int(state.generate_state(1, dtype=np.uint32)[0]) & 0x7FFFFFFF

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)[: len(self) * self.batch_size]
        return self._batches(order, epoch)

    # ---- pipeline

    def _feed(self, order: np.ndarray):
        """External source of the in-memory path: one (images, idx) batch per step."""
        b = self.batch_size
        for s in range(0, len(order), b):
            idx = order[s: s + b]
            yield self._hwc[idx], idx

    def build_pipeline(self, order: torch.Tensor, epoch: int):
        """The (built) DALI pipeline serving ``order``; its outputs are the
        normalised float views (CHW; HWC when ``channels_last``) and the idx of
        each sample (reader label or external-source output)."""
        api = _api()
        fn, types = api.fn, api.types
        order_np = order.numpy().astype(np.int64)
        want_strong = self.strong is not None
        train = not self.is_eval and self.augment is not None
        rrc = train and self.crop_size is not None and self.augment.crop
        dev_decode = "mixed" if self.gpu else "cpu"
        kind = types.RGB if self.channels == 3 else types.GRAY
        cs = self.crop_size
        layout = "HWC" if self.channels_last else "CHW"  # channels-last: a free permute

        def geometry(x, native_hw):
            """One view's geometry: (HWC uint8 node, centre-crop for CMN or None, out HW)."""
            if rrc:
                y = fn.random_resized_crop(x, size=(cs, cs), random_area=list(self.scale),
                                           random_aspect_ratio=list(self.ratio))
                return y, None, (cs, cs)
            if train and self.augment.crop and self.augment.pad > 0 and cs is None:
                p = self.augment.pad
                anchor = fn.random.uniform(values=list(range(-p, p + 1)), shape=(2,),
                                           dtype=types.INT32)  # (dy, dx) in [-p, p]
                y = fn.slice(x, start=anchor, rel_shape=(1.0, 1.0), axis_names="HW",
                             out_of_bounds_policy=_PAD_POLICY[self.augment.pad_mode],
                             fill_values=0)
                return y, None, native_hw
            if self.resize is not None:
                x = fn.resize(x, resize_shorter=self.resize, antialias=True)
            if cs is not None:
                return x, (cs, cs), (cs, cs)
            return x, None, native_hw

        def finish(y, crop, flip: bool):
            kw = {}
            if crop is not None:
                kw = dict(crop=crop, crop_pos_x=0.5, crop_pos_y=0.5, rounding="truncate",
                          out_of_bounds_policy="pad", fill_values=0)
            mirror = fn.random.coin_flip(probability=0.5) if flip else 0
            return fn.crop_mirror_normalize(
                y, mirror=mirror, mean=[255.0 * m for m in self.mean],
                std=[255.0 * s for s in self.std], dtype=types.FLOAT, output_layout=layout, **kw)

        def graph():
            if self.is_files:
                enc, idx = fn.readers.file(files=[self.files[i] for i in order_np],
                                           labels=[int(i) for i in order_np],
                                           random_shuffle=False, pad_last_batch=True,
                                           name="reader")
                native_hw = None
                if rrc and not want_strong:  # decode only the crop window, then resize
                    x = fn.decoders.image_random_crop(
                        enc, device=dev_decode, output_type=kind, random_area=list(self.scale),
                        random_aspect_ratio=list(self.ratio))
                    x = fn.resize(x, size=(cs, cs), antialias=True)
                    views = [(x, None, (cs, cs))]
                else:
                    x = fn.decoders.image(enc, device=dev_decode, output_type=kind)
                    if cs is None:
                        native_hw = fn.peek_image_shape(enc, dtype=types.INT32)[0:2]
                    views = None
            else:
                x, idx = fn.external_source(
                    source=self._feed(order_np), num_outputs=2, batch=True,
                    layout=["HWC", ""], dtype=[types.UINT8, types.INT64])
                if self.gpu:
                    x = x.gpu()
                native_hw = self.image_hw
                views = None
            flip = train and self.augment.flip
            outs = []
            for v in self.views:
                y, crop, hw = views[0] if views is not None else geometry(x, native_hw)
                if v == "strong":
                    if crop is not None:
                        y = fn.crop(y, crop=crop, crop_pos_x=0.5, crop_pos_y=0.5,
                                    rounding="truncate", out_of_bounds_policy="pad", fill_values=0)
                        crop = None
                    s = self.strong
                    y = api.rand_augment.rand_augment(
                        y, n=s.n, m=s.m, num_magnitude_bins=s.num_magnitude_bins,
                        shape=hw, fill_value=s.fill_value, monotonic_mag=s.monotonic_mag,
                        excluded=list(s.excluded) or None)
                outs.append(finish(y, crop, flip))
            return (*outs, idx)

        define = api.pipeline_def(graph, enable_conditionals=want_strong)
        # DALI announces its own internal deprecations with a "default" filter that
        # overrides the caller's: record them instead of printing them.
        with warnings.catch_warnings(record=True):
            pipe = define(batch_size=self.batch_size, num_threads=self.num_threads,
                          device_id=self.device_id, seed=self.pipeline_seed(epoch),
                          prefetch_queue_depth=self.prefetch)
            pipe.build()
        return pipe

    def _image(self, tl, n: int) -> torch.Tensor:
        """A float32 CHW (or HWC) TensorList, CPU or GPU -> ``(n, C, H, W)`` on
        ``self.device`` (a copy: DALI reuses its output buffers)."""
        t = tl.as_tensor()
        x = torch.empty(t.shape(), dtype=torch.float32, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.gpu else None
        _api().feed_ndarray(t, x, cuda_stream=stream)
        x = x[:n]
        return x.permute(0, 3, 1, 2) if self.channels_last else x  # HWC -> channels-last NCHW

    def _batches(self, order: torch.Tensor, epoch: int):
        if len(order) == 0:
            return
        pipe = self.build_pipeline(order, epoch)
        try:
            b = self.batch_size
            for k in range(len(self)):
                expected = order[k * b: (k + 1) * b]
                n = len(expected)
                *xs, idx = pipe.run()
                got = torch.tensor(np.asarray(idx.as_tensor()), dtype=torch.int64).view(-1)[:n]
                if not torch.equal(got, expected):
                    raise RuntimeError(f"DALI returned samples {got.tolist()} where batch {k} "
                                       f"of epoch {epoch} should hold {expected.tolist()}")
                idx_dev = got.to(self.device, non_blocking=True)
                ys = self.labels[idx_dev]
                yield (*(self._image(x, n) for x in xs), ys, idx_dev)
        finally:
            del pipe


def dali_loader(source: Source, batch_size: int, **kwargs) -> DaliLoader:
    """``DaliLoader(source, batch_size, **kwargs)``, for registries keyed by name."""
    return DaliLoader(source, batch_size, **kwargs)


__all__ = ["DALI_RANDAUGMENT_OPS", "INSTALL_HINT", "DaliLoader", "ImageFiles", "RandAugmentSpec", "dali_available",
           "dali_loader", "require_dali"]
