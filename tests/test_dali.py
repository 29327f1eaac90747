"""DALI loaders (ktgfast/data/dali.py): CPU-only pipelines (device_id=None).

Synthetic images carry their own coordinates (channel 0: row, channel 1:
column) and their sample id (channel 2), so every output can be traced back to
the input pixels it came from: labels must follow images through augmentation,
crops must stay within the padded bounds, and pad + crop + flip must be exactly
``augment.augment_batch`` for some offset and flip.
"""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from ktgfast.data import Augment, AugParams, Split, TensorLoader, augment_batch  # noqa: E402
from ktgfast.data.dali import (  # noqa: E402
    DALI_RANDAUGMENT_OPS,
    DaliLoader,
    ImageFiles,
    RandAugmentSpec,
    dali_available,
    require_dali,
)

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)
N, SIZE, PAD = 37, 32, 4


def coord_images(n: int, size: int, step: int = 8) -> torch.Tensor:
    """uint8 (n, 3, size, size): row code, column code, sample id * 6."""
    r = torch.arange(size) * step + step // 2
    img = torch.empty(n, 3, size, size, dtype=torch.uint8)
    img[:, 0] = r[:, None]
    img[:, 1] = r[None, :]
    img[:, 2] = (torch.arange(n) * 6)[:, None, None]
    return img


def make_split(images: torch.Tensor) -> Split:
    n = len(images)
    return Split(images, torch.arange(n) % 5, ids=torch.arange(100, 100 + n))


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of a (B, C, H, W) batch."""
    m = torch.tensor(MEAN).view(1, -1, 1, 1) * 255
    s = torch.tensor(STD).view(1, -1, 1, 1) * 255
    return (x * s + m).round().clamp(0, 255).to(torch.uint8)


def collect(loader):
    return [tuple(t.clone() for t in b) for b in loader]


@pytest.fixture(scope="module")
def split() -> Split:
    return make_split(coord_images(N, SIZE))


@pytest.fixture(scope="module")
def noise_split() -> Split:
    g = torch.Generator().manual_seed(0)
    return make_split(torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g))


# ---------------------------------------------------------------------------- optional import

def test_require_dali_says_how_to_install(monkeypatch, split):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali now fails
    with pytest.raises(ImportError, match="pip install nvidia-dali-cuda130"):
        require_dali()
    assert not dali_available()
    with pytest.raises(ImportError, match="TensorLoader"):
        DaliLoader(split, 8, mean=MEAN, std=STD)


@pytest.mark.slow  # a fresh interpreter importing torch
def test_module_import_does_not_import_dali():
    code = ("import sys, ktgfast.data.dali as d; "
            "assert 'nvidia.dali' not in sys.modules, 'DALI imported eagerly'; "
            "assert d.dali_available() and 'nvidia.dali' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- contract

@pytest.mark.parametrize("drop_last", [False, True])
def test_shapes_dtypes_and_last_batch(split, drop_last):
    dl = DaliLoader(split, 8, shuffle=True, drop_last=drop_last, augment=Augment(),
                    strong=RandAugmentSpec(n=1, m=5), mean=MEAN, std=STD)
    assert dl.views == ("weak", "strong")
    batches = collect(dl)
    sizes = [len(b[-1]) for b in batches]
    assert sizes == ([8] * 4 if drop_last else [8, 8, 8, 8, 5])  # 37 = 4 * 8 + 5
    assert len(dl) == len(batches)
    for xw, xs, y, idx in batches:
        for x in (xw, xs):
            assert x.shape == (len(y), 3, SIZE, SIZE) and x.dtype == torch.float32
            assert x.device.type == "cpu" and x.is_contiguous()
        assert y.dtype == idx.dtype == torch.int64
        assert torch.equal(y, split.labels[idx])
    seen = torch.cat([b[-1] for b in batches])
    assert len(set(seen.tolist())) == len(seen) == (32 if drop_last else N)


def test_eval_normalisation_equals_tensor_loader(noise_split):
    dali = collect(DaliLoader.eval(noise_split, 8, mean=MEAN, std=STD))
    ref = collect(TensorLoader.eval(noise_split, 8, mean=MEAN, std=STD))
    assert [len(b[1]) for b in dali] == [len(b[1]) for b in ref] == [8, 8, 8, 8, 5]
    for (x, y, i), (xr, yr, ir) in zip(dali, ref):
        assert x.dtype == xr.dtype and x.shape == xr.shape
        torch.testing.assert_close(x, xr, atol=1e-6, rtol=0)
        assert torch.equal(y, yr) and torch.equal(i, ir)
    last = collect(DaliLoader.eval(noise_split, 8, mean=MEAN, std=STD, channels_last=True))
    for (x, _, _), (xr, _, _) in zip(last, ref):
        assert x.shape == xr.shape and x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x, xr, atol=1e-6, rtol=0)


@pytest.mark.parametrize("crop", [24, 25])  # even and odd margins: anchor (32 - crop) // 2
def test_centre_crop_equals_torch(noise_split, crop):
    norm = TensorLoader.eval(noise_split, 8, mean=MEAN, std=STD).normalize
    t = (SIZE - crop) // 2
    for x, y, idx in DaliLoader(noise_split, 8, eval=True, crop_size=crop, mean=MEAN, std=STD):
        ref = norm(noise_split.images[idx][:, :, t:t + crop, t:t + crop])
        assert x.shape == (len(idx), 3, crop, crop)
        torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("pad_mode", ["reflect", "zero"])
def test_pad_crop_flip_exact_in_bounds_and_label_aligned(split, pad_mode):
    """Each output is augment_batch(input[idx], dy, dx, flip) for exactly one
    offset in [0, 2 * PAD]^2 and flip: crops in bounds, labels follow samples."""
    shifts = range(2 * PAD + 1)
    combos = list(itertools.product(shifts, shifts, (False, True)))
    dy, dx, fl = (torch.tensor(c) for c in zip(*combos))
    params = AugParams(dy, dx, fl)
    dl = DaliLoader(split, 16, shuffle=True, drop_last=False, seed=1,
                    augment=Augment(pad=PAD, pad_mode=pad_mode), mean=MEAN, std=STD)
    found = []
    for _ in range(2):
        for x, y, idx in dl:
            assert torch.equal(y, split.labels[idx])
            u = to_u8(x)
            for j, i in enumerate(idx.tolist()):
                cand = augment_batch(split.images[i].expand(len(combos), -1, -1, -1).contiguous(),
                                     params, PAD, pad_mode)
                match = (cand == u[j]).flatten(1).all(1).nonzero().flatten()
                assert len(match) == 1, f"sample {i}: output is no pad/crop/flip of its input"
                found.append(combos[match.item()])
    assert len(found) == 2 * N
    offsets = {(a, b) for a, b, _ in found}
    assert len(offsets) > 20  # many different offsets (81 possible)


def test_flip_probability_is_half():
    n, size = 1024, 8
    sp = make_split(coord_images(n, size, step=16))
    dl = DaliLoader(sp, 256, augment=Augment(pad=0, crop=False, flip=True), drop_last=False,
                    mean=MEAN, std=STD, seed=7)
    flips = []
    for x, y, idx in dl:
        col = to_u8(x)[:, 1, 0]                               # column codes of row 0
        fwd, bwd = col[:, 0] < col[:, -1], col[:, 0] > col[:, -1]
        assert bool((fwd ^ bwd).all())
        assert torch.equal(to_u8(x)[:, 2, 0, 0], (idx * 6).to(torch.uint8))
        flips.append(bwd)
    rate = torch.cat(flips).float().mean().item()
    assert abs(rate - 0.5) < 0.06, rate                        # 4 sigma at n = 1024


def test_random_resized_crop_in_bounds_and_aligned():
    size, out = 64, 32
    sp = make_split(coord_images(12, size, step=4))            # codes 2..254
    dl = DaliLoader(sp, 6, augment=Augment(), crop_size=out, drop_last=False, mean=MEAN,
                    std=STD, seed=3)
    for x, y, idx in dl:
        assert x.shape == (len(idx), 3, out, out)
        u = to_u8(x).int()
        # sample id channel untouched (interpolating a constant), no padding anywhere
        assert torch.equal(u[:, 2], (idx * 6).int()[:, None, None].expand(-1, out, out))
        assert bool((u[:, :2] >= 2).all()) and bool((u[:, :2] <= 254).all())
        rows = u[:, 0, :, out // 2]
        assert bool((rows.diff(dim=1) >= 0).all())             # rows keep their order
        cols = u[:, 1, out // 2, :].diff(dim=1)
        assert bool(((cols >= 0).all(1) | (cols <= 0).all(1)).all())  # maybe mirrored


def test_two_views_differ(noise_split):
    dl = DaliLoader(noise_split, 16, augment=Augment(), strong=RandAugmentSpec(n=2, m=9),
                    drop_last=False, mean=MEAN, std=STD)
    differ = []
    for xw, xs, y, idx in dl:
        assert xw.shape == xs.shape
        differ.append((xw != xs).flatten(1).any(1))
    differ = torch.cat(differ)
    assert len(differ) == N and differ.float().mean() > 0.9


def test_strong_view_keeps_labels_aligned():
    """RandAugment at magnitude 0 (minus equalize/auto-contrast) leaves constant
    images unchanged, so each view must still show its own sample's value."""
    imgs = (torch.arange(N, dtype=torch.uint8) * 6).view(N, 1, 1, 1).expand(N, 3, SIZE, SIZE)
    sp = make_split(imgs.contiguous())
    spec = RandAugmentSpec(n=3, m=0, excluded=("equalize", "auto_contrast"))
    dl = DaliLoader(sp, 8, augment=Augment(), strong=spec, drop_last=False, mean=MEAN, std=STD)
    seen = []
    for xw, xs, y, idx in dl:
        want = (idx * 6).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, SIZE, SIZE)
        assert torch.equal(to_u8(xw), want) and torch.equal(to_u8(xs), want)
        assert torch.equal(y, sp.labels[idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(N))


# ---------------------------------------------------------------------------- seeds and shards

@pytest.mark.slow  # five DALI pipelines run epoch by epoch
def test_epochs_reproducible_under_seed(noise_split):
    def loader(seed):
        return DaliLoader(noise_split, 16, augment=Augment(), strong=RandAugmentSpec(),
                          drop_last=False, mean=MEAN, std=STD, seed=seed)

    a = loader(3)
    e0, e1 = collect(a), collect(a)
    b = loader(3)
    b.set_epoch(1)                      # resume at epoch 1 without running epoch 0
    r1 = collect(b)
    for u, v in zip(e1, r1):
        assert all(torch.equal(s, t) for s, t in zip(u, v))
    # augmentation (not only the order) changes with the epoch and the seed
    fixed = DaliLoader(noise_split, 16, shuffle=False, augment=Augment(), drop_last=False,
                       mean=MEAN, std=STD, seed=3)
    f0, f1 = collect(fixed), collect(fixed)
    other = DaliLoader(noise_split, 16, shuffle=False, augment=Augment(), drop_last=False,
                       mean=MEAN, std=STD, seed=4)
    g0 = collect(other)
    assert torch.equal(f0[0][-1], f1[0][-1]) and torch.equal(f0[0][-1], g0[0][-1])
    assert not torch.equal(f0[0][0], f1[0][0]) and not torch.equal(f0[0][0], g0[0][0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_covers_dataset_once(split, drop_last):
    world = 3
    shards = []
    for rank in range(world):
        kw = dict(shuffle=True, drop_last=drop_last, mean=MEAN, std=STD, seed=5, rank=rank,
                  world_size=world)
        dl, ref = DaliLoader(split, 5, **kw), TensorLoader(split, 5, **kw)
        dl.set_epoch(2)
        ref.set_epoch(2)
        got = [b[-1] for b in dl]
        assert [i.tolist() for i in got] == [b[-1].tolist() for b in ref]  # TensorLoader's order
        assert len(got) == len(dl)
        shards.append(torch.cat(got))
    everything = torch.cat(shards).tolist()
    assert len(set(everything)) == len(everything)              # disjoint
    if drop_last:
        assert [len(s) for s in shards] == [10, 10, 10]         # 12 per rank -> 2 batches of 5
    else:
        assert sorted(everything) == list(range(N))             # each sample exactly once


# ---------------------------------------------------------------------------- image files

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/<a|b|c>/*.png: 4 noise images of 40x48 per class."""
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("imagefolder") / "train"
    g = np.random.default_rng(0)
    for c in "abc":
        (root / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(g.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


def _read(path) -> torch.Tensor:
    from PIL import Image
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def test_folder_eval_centre_crop_equals_torch(folder):
    dl = DaliLoader.from_folder(folder, 5, eval=True, crop_size=32, mean=MEAN, std=STD)
    assert dl.classes == ("a", "b", "c") and len(dl) == 3
    norm = TensorLoader.eval(make_split(coord_images(1, 4)), 1, mean=MEAN, std=STD).normalize
    seen = []
    for x, y, idx in dl:
        assert x.shape == (len(idx), 3, 32, 32) and x.dtype == torch.float32
        ref = torch.stack([_read(dl.files[i])[:, 4:36, 8:40] for i in idx.tolist()])
        torch.testing.assert_close(x, norm(ref), atol=1e-6, rtol=0)
        assert [dl.classes[c] for c in y.tolist()] == [dl.files[i].split("/")[-2] for i in idx.tolist()]
        seen += idx.tolist()
    assert seen == list(range(12))                                # in file order, 5 + 5 + 2


def test_folder_resize_then_centre_crop(folder):
    dl = DaliLoader.from_folder(folder, 4, eval=True, resize=36, crop_size=32, mean=MEAN, std=STD)
    shapes = {tuple(x.shape[1:]) for x, _, _ in dl}
    assert shapes == {(3, 32, 32)}


@pytest.mark.parametrize("two_views", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_folder_train_sharded_reproducible(folder, two_views):
    strong = RandAugmentSpec() if two_views else None
    shards = []
    for rank in range(2):
        kw = dict(augment=Augment(), crop_size=24, strong=strong, drop_last=False, mean=MEAN,
                  std=STD, seed=9, rank=rank, world_size=2)
        first, again = (collect(DaliLoader.from_folder(folder, 4, **kw)) for _ in range(2))
        for u, v in zip(first, again):
            assert all(torch.equal(s, t) for s, t in zip(u, v))   # same seed, same epoch
        files = ImageFiles.scan(folder).files
        for *xs, y, idx in first:
            assert len(xs) == (2 if two_views else 1)
            for x in xs:
                assert x.shape == (len(idx), 3, 24, 24)
            assert [("a", "b", "c")[c] for c in y.tolist()] == \
                [files[i].split("/")[-2] for i in idx.tolist()]
        assert [len(b[-1]) for b in first] == [4, 2]              # 6 per rank: 4 + 2
        shards += torch.cat([b[-1] for b in first]).tolist()
    assert sorted(shards) == list(range(12))


# ---------------------------------------------------------------------------- argument checks

def test_bad_arguments(split):
    with pytest.raises(ValueError, match="rank"):
        DaliLoader(split, 8, mean=MEAN, std=STD, rank=2, world_size=2)
    with pytest.raises(ValueError, match="reflect padding"):
        DaliLoader(split, 8, mean=MEAN, std=STD, augment=Augment(pad=SIZE))
    with pytest.raises(ValueError, match="mean/std"):
        DaliLoader(split, 8, mean=(0.5,), std=(0.5,))
    gray = make_split(coord_images(4, 8)[:, :1].contiguous())
    with pytest.raises(ValueError, match="RGB"):
        DaliLoader(gray, 2, mean=(0.5,), std=(0.5,), strong=RandAugmentSpec())
    with pytest.raises(ValueError, match="RandAugment m"):
        RandAugmentSpec(n=2, m=31)
    with pytest.raises(ValueError, match="views"):
        DaliLoader(split, 8, mean=MEAN, std=STD, views=("strong",))
    assert DaliLoader(split, 8, mean=MEAN, std=STD, views=("weak", "strong")).strong == RandAugmentSpec()


def test_strong_spec_coercion():
    from types import SimpleNamespace as NS
    spec = RandAugmentSpec.coerce(NS(n=3, m=12.0, fill=0, random_magnitude=False,
                                     ops=("identity", "rotate", "autocontrast")))
    assert (spec.n, spec.m, spec.fill_value) == (3, 12, 0)
    assert set(spec.excluded) == set(DALI_RANDAUGMENT_OPS) - {"identity", "rotate", "auto_contrast"}
    with pytest.raises(ValueError, match="random_magnitude"):
        RandAugmentSpec.coerce(NS(n=2, m=9, random_magnitude=True))
    with pytest.raises(ValueError, match="integer"):
        RandAugmentSpec.coerce(NS(n=2, m=4.5))
    with pytest.raises(ValueError, match="unknown"):
        RandAugmentSpec(excluded=("blur",))
