"""Batched RandAugment, the two-view TensorLoader, the torch DataLoader
reference (TorchLoader), the batch_transform hook and loader selection."""
from __future__ import annotations

import logging
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from ktgfast.data import Augment, Split, TensorLoader
from ktgfast.data import loaders as L
from ktgfast.data.randaugment import OP_NAMES, OPS, RandAugment, apply_op
from ktgfast.data.torch_loader import TorchLoader

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
try:
    import torchvision  # noqa: F401  (the torch loader's transforms)
    HAS_TORCHVISION = True
except ImportError:
    HAS_TORCHVISION = False
needs_torchvision = pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed")
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
SIGNED = [o for o in OP_NAMES if OPS[o].signed]
MAGNITUDE_FREE = ("identity", "autocontrast", "equalize")


# ---------------------------------------------------------------------------
# helpers

def images(n=16, c=3, h=32, w=32, seed=0, low_contrast=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    if low_contrast:  # leaves autocontrast / equalize something to do
        x = (x // 2 + 40).to(torch.uint8)
    return x


def make_split(n, size=8, num_classes=5, seed=0):
    return Split(images(n, 3, size, size, seed), torch.arange(n) % num_classes)


def coded_split(n, size=12, num_classes=7):
    """Constant images spelling their index (channels 0, 1) and label (2)."""
    idx = torch.arange(n)
    labels = (idx * 5 + 3) % num_classes
    code = torch.stack([idx % 256, idx // 256, labels], 1).to(torch.uint8)
    return Split(code[:, :, None, None].expand(n, 3, size, size).contiguous(), labels)


def denormalize(x, mean=MEAN, std=STD):
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    u = (x.double().cpu() * s + m) * 255
    assert (u - u.round()).abs().max() < 1e-3
    return u.round().to(torch.int64)


def epoch(loader, e=None):
    if e is not None:
        loader.set_epoch(e)
    return [tuple(t.cpu() for t in b) for b in loader]


def cat_field(batches, k):
    return torch.cat([b[k] for b in batches])


def assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert len(u) == len(v)
        for s, t in zip(u, v):
            assert torch.equal(s, t)


# ---------------------------------------------------------------------------
# RandAugment ops

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", [1, 3])
def test_ops_keep_shape_dtype_device(device, c):
    x = images(6, c, 9, 11).to(device)
    level = torch.tensor([-30.0, -12.5, 0.0, 4.0, 17.0, 30.0])
    for name in OP_NAMES:
        lv = level if OPS[name].signed else level.abs()
        y = apply_op(name, x, lv.to(device))
        assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device, name


@pytest.mark.parametrize("name", [o for o in OP_NAMES if o not in MAGNITUDE_FREE])
def test_ops_are_identity_at_level_zero(name):
    x = images(8, 3).clamp(max=254)  # solarize's threshold at level 0 is 255
    assert torch.equal(apply_op(name, x, 0.0), x)
    assert torch.equal(apply_op("identity", x, 30.0), x)


@pytest.mark.parametrize("name", [o for o in OP_NAMES if o != "identity"])
def test_ops_change_images_at_high_level(name):
    x = images(8, 3, low_contrast=True)
    for level in ([30.0, -30.0] if OPS[name].signed else [30.0]):
        y = apply_op(name, x, level)
        changed = (y != x).flatten(1).float().mean(1)
        assert (changed > 0.2).all(), (name, level, changed)


def _torchvision_op(TF, name, img, level):
    """torchvision's RandAugment op at integer ``level`` of its 31 bins."""
    bins = 31
    sign = -1.0 if level < 0 else 1.0
    lin = lambda hi: sign * float(torch.linspace(0.0, hi, bins)[abs(level)])  # noqa: E731
    H, W = img.shape[-2:]
    nearest = TF.InterpolationMode.NEAREST
    if name == "shear_x":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, interpolation=nearest,
                         shear=[math.degrees(math.atan(lin(0.3))), 0.0], center=[0, 0])
    if name == "shear_y":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, interpolation=nearest,
                         shear=[0.0, math.degrees(math.atan(lin(0.3)))], center=[0, 0])
    if name == "translate_x":
        return TF.affine(img, angle=0.0, translate=[int(lin(150 / 331 * W)), 0], scale=1.0,
                         shear=[0.0, 0.0], interpolation=nearest)
    if name == "translate_y":
        return TF.affine(img, angle=0.0, translate=[0, int(lin(150 / 331 * H))], scale=1.0,
                         shear=[0.0, 0.0], interpolation=nearest)
    if name == "rotate":
        return TF.rotate(img, lin(30.0), interpolation=nearest)
    factor = {"brightness": TF.adjust_brightness, "color": TF.adjust_saturation,
              "contrast": TF.adjust_contrast, "sharpness": TF.adjust_sharpness}
    if name in factor:
        return factor[name](img, 1.0 + lin(0.9))
    if name == "posterize":
        return TF.posterize(img, int((8 - torch.arange(bins) / ((bins - 1) / 4)).round()[level]))
    if name == "solarize":
        return TF.solarize(img, 255.0 * float(torch.linspace(1.0, 0.0, bins)[level]))
    return {"identity": lambda i: i, "autocontrast": TF.autocontrast,
            "equalize": TF.equalize}[name](img)


@pytest.mark.parametrize("name", OP_NAMES)
def test_ops_match_torchvision(name):
    TF = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.cat([images(6, 3, 32, 32), images(6, 3, 32, 32, seed=1, low_contrast=True)])
    for level in [0, 9, 30] + ([-17] if OPS[name].signed else []):
        ours = apply_op(name, x, float(level))
        ref = torch.stack([_torchvision_op(TF, name, img, level) for img in x])
        diff = (ours.int() - ref.int()).abs()
        if name == "color":  # float rounding of the gray blend: rare off-by-one pixels
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.02, level
        else:
            assert torch.equal(ours, ref), (name, level, int(diff.max()))


def test_randaugment_is_deterministic_under_a_generator():
    x = images(64, 3, 16, 16)
    ra = RandAugment(n=2, m=12)
    a = ra(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, ra(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, ra(x, torch.Generator().manual_seed(4)))
    assert not torch.equal(a, x)
    x0 = x.clone()
    ra(x, torch.Generator().manual_seed(3))
    assert torch.equal(x, x0)  # the input is not modified


@pytest.mark.parametrize("device", DEVICES)
def test_randaugment_batch_equals_per_sample(device):
    """Grouping by op must keep every sample's own op and level."""
    x = images(40, 3, 12, 12, low_contrast=True).to(device)
    ra = RandAugment(n=3, m=20, random_magnitude=True, fill=77)
    p = ra.sample(40, torch.Generator().manual_seed(0))
    batched = ra.apply(x, p)
    single = torch.cat([ra.apply(x[i:i + 1], p.take(slice(i, i + 1))) for i in range(40)])
    assert torch.equal(batched, single)
    # each sample = its ops in sequence
    for i in range(0, 40, 7):
        want = x[i:i + 1]
        for r in range(3):
            want = apply_op(ra.ops[int(p.op[r, i])], want, float(p.level[r, i]), fill=77)
        assert torch.equal(batched[i:i + 1], want)


def test_randaugment_sampling():
    ra = RandAugment(n=2, m=10)
    p = ra.sample(5000, torch.Generator().manual_seed(0))
    assert p.op.shape == p.level.shape == (2, 5000)
    counts = torch.bincount(p.op.flatten(), minlength=len(OP_NAMES))
    assert (counts - 10000 / 14).abs().max() < 150  # uniform choice
    signed = torch.tensor([OPS[o].signed for o in ra.ops])[p.op]
    assert (p.level.abs() == 10).all()
    assert (p.level[~signed] == 10).all()
    assert abs(float((p.level[signed] < 0).float().mean()) - 0.5) < 0.03
    q = RandAugment(n=1, m=12, random_magnitude=True).sample(4000, torch.Generator().manual_seed(0))
    assert q.level.abs().max() <= 12 and q.level.abs().min() >= 0
    assert abs(float(q.level.abs().mean()) - 6) < 0.3
    sub = RandAugment(n=1, m=30, ops=("identity", "rotate"))
    x = images(32, 3, 12, 12)
    y = sub(x, torch.Generator().manual_seed(0))
    same = (y == x).flatten(1).all(1)
    assert 0 < int(same.sum()) < 32  # identity on about half
    assert torch.equal(RandAugment(n=0)(x), x)


def test_randaugment_errors():
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        RandAugment(ops=("identity", "invert"))
    with pytest.raises(ValueError, match=r"m must lie in \[0, 30\]"):
        RandAugment(m=31)
    with pytest.raises(ValueError, match="uint8"):
        RandAugment()(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        apply_op("blur", images(2), 3.0)
    with pytest.raises(ValueError, match="host tensors for 3 samples"):
        RandAugment().apply(images(3), RandAugment().sample(4))


# ---------------------------------------------------------------------------
# TensorLoader with two views

STRONG = RandAugment(n=2, m=9)
GEOMETRIC = RandAugment(n=2, m=9, ops=("identity", "rotate", "shear_x", "shear_y",
                                       "translate_x", "translate_y"))


@pytest.mark.parametrize("device", DEVICES)
def test_views_shapes_and_both_views_differ(device):
    s = make_split(96, size=12)
    ld = TensorLoader(s, 32, augment=Augment(), strong=STRONG, mean=MEAN, std=STD, device=device)
    assert ld.views == ("weak", "strong") and len(ld) == 3
    for xw, xs, y, idx in ld:
        assert xw.shape == xs.shape == (32, 3, 12, 12)
        assert xw.dtype == xs.dtype == torch.float32 and xw.device.type == device
        assert y.dtype == idx.dtype == torch.int64 and torch.equal(y.cpu(), s.labels[idx.cpu()])
        differ = (xw != xs).flatten(1).any(1)
        assert int(differ.sum()) >= 30  # a sample's views differ (rarely: identity + same crop)


@pytest.mark.parametrize("device", DEVICES)
def test_labels_follow_samples_through_both_views(device):
    s = coded_split(300)
    ld = TensorLoader(s, 32, augment=Augment(), strong=GEOMETRIC, mean=MEAN, std=STD,
                      device=device, seed=2)
    seen = []
    for xw, xs, y, idx in ld:
        idx, y = idx.cpu(), y.cpu()
        for x in (xw, xs):
            centre = denormalize(x)[:, :, 6, 6]  # crops and small warps keep the centre
            assert torch.equal(centre[:, 0] + 256 * centre[:, 1], idx)
            assert torch.equal(centre[:, 2], y)
        assert torch.equal(y, s.labels[idx])
        seen.append(idx)
    assert len(torch.cat(seen).unique()) == len(ld) * 32


def test_strong_view_is_its_parameters_applied_to_its_samples():
    """The full op set: recompute every strong batch from the loader's own
    parameters and the samples its idx names."""
    s = make_split(100, size=12)
    aug = Augment()
    ld = TensorLoader(s, 25, augment=aug, strong=STRONG, mean=MEAN, std=STD, seed=4)
    got = epoch(ld, 1)
    order = ld.order(1)
    crop, ra = ld.strong_params(1, len(order))
    from ktgfast.data.augment import augment_batch
    for k, (_, xs, _, idx) in enumerate(got):
        sl = slice(25 * k, 25 * (k + 1))
        assert torch.equal(idx, order[sl])
        want = STRONG.apply(augment_batch(s.images[idx], crop.take(sl), aug.pad), ra.take(sl))
        assert torch.equal(denormalize(xs), want.long())


def test_strong_view_crops_within_bounds_and_flip_half():
    n, H, W, pad = 400, 10, 12, 4
    base = (torch.arange(H * W) + 1).view(1, 1, H, W)
    s = Split(base.expand(n, 3, H, W).to(torch.uint8).contiguous(),
              torch.zeros(n, dtype=torch.int64))
    ld = TensorLoader(s, 100, augment=Augment(pad=pad, pad_mode="zero"), mean=MEAN, std=STD,
                      strong=RandAugment(n=1, ops=("identity",)))
    padded = F.pad(base[0, 0], (pad,) * 4)
    flips, shifts, same_crop = 0, set(), 0
    for xw, xs, _, _ in ld:
        for view in (xw, xs):
            for img in denormalize(view)[:, 0]:
                v = int(img[H // 2, W // 2]) - 1
                flipped = int(img[H // 2, W // 2 + 1]) - 1 == v - 1
                dy = v // W - H // 2
                dx = v % W - (W - 1 - W // 2 if flipped else W // 2)
                assert abs(dy) <= pad and abs(dx) <= pad
                want = padded[dy + pad: dy + pad + H, dx + pad: dx + pad + W]
                assert torch.equal(img, want.flip(-1) if flipped else want)
                if view is xs:
                    flips += flipped
                    shifts.add((dy, dx))
        same_crop += int((xw == xs).flatten(1).all(1).sum())
    assert abs(flips / n - 0.5) < 0.08 and len(shifts) > 40
    assert same_crop < n * 0.05  # the views' crops are independent draws


def test_views_are_deterministic_and_weak_view_unchanged_by_strong():
    s = make_split(128, size=12)
    mk = lambda seed=0, strong=STRONG: TensorLoader(  # noqa: E731
        s, 32, augment=Augment(), strong=strong, mean=MEAN, std=STD, seed=seed)
    a = mk()
    e0, e1 = epoch(a), epoch(a)
    assert_same(epoch(mk(), 1), e1)
    assert_same(epoch(mk(), 0), e0)
    assert not torch.equal(e0[0][1], e1[0][1])
    assert not torch.equal(epoch(mk(seed=1), 0)[0][1], e0[0][1])
    single = epoch(mk(strong=None), 0)  # the weak view is the one-view loader's batch
    for (xw, _, y, i), (x, y1, i1) in zip(e0, single):
        assert torch.equal(xw, x) and torch.equal(y, y1) and torch.equal(i, i1)


def test_views_without_crop_flip():
    s = make_split(64, size=12)
    ld = TensorLoader(s, 32, strong=STRONG, mean=MEAN, std=STD, shuffle=False)
    xw, xs, _, idx = next(iter(ld))
    assert torch.equal(denormalize(xw), s.images[idx].long())
    assert not torch.equal(xw, xs)


# ---------------------------------------------------------------------------
# sharding: tensor and torch loaders

def _loader(kind, split, bs, **kw):
    if kind == "torch":
        kw.setdefault("num_workers", 0)
        return TorchLoader(split, bs, **kw)
    return TensorLoader(split, bs, **kw)


@needs_torchvision
@pytest.mark.parametrize("kind", ["tensor", "torch"])
@pytest.mark.parametrize("n,ws,drop_last", [(100, 3, False), (64, 4, False), (103, 3, True)])
def test_shards_cover_the_dataset_once_per_epoch(kind, n, ws, drop_last):
    s = make_split(n)
    for e in (0, 3):
        parts = []
        for rank in range(ws):
            ld = _loader(kind, s, 8, drop_last=drop_last, augment=Augment(pad=2), mean=MEAN,
                         std=STD, rank=rank, world_size=ws, seed=5)
            idx = cat_field(epoch(ld, e), -1)
            assert len(idx) == (len(ld) * 8 if drop_last else ld.num_samples)
            parts.append(idx)
        flat = torch.cat(parts).tolist()
        assert len(flat) == len(set(flat))  # nobody sees a sample twice
        if drop_last:
            assert {len(p) for p in parts} == {(n // ws) // 8 * 8}
        else:
            assert sorted(flat) == list(range(n))


@needs_torchvision
def test_torch_and_tensor_loaders_visit_the_same_order():
    s = make_split(90)
    kw = dict(augment=Augment(pad=2), mean=MEAN, std=STD, seed=7, rank=1, world_size=2)
    a = epoch(TensorLoader(s, 16, **kw), 2)
    b = epoch(TorchLoader(s, 16, num_workers=0, **kw), 2)
    assert [len(x[-1]) for x in a] == [len(x[-1]) for x in b]
    assert torch.equal(cat_field(a, -1), cat_field(b, -1))


# ---------------------------------------------------------------------------
# TorchLoader

@needs_torchvision
def test_torch_loader_shapes_and_alignment():
    s = coded_split(120)
    ld = TorchLoader(s, 32, augment=Augment(), mean=MEAN, std=STD, num_workers=0, seed=1)
    assert len(ld) == 3 and ld.views == ("weak",)
    for x, y, idx in ld:
        assert x.shape == (32, 3, 12, 12) and x.dtype == torch.float32
        assert y.dtype == idx.dtype == torch.int64
        u = denormalize(x)
        assert (u == u[:, :, :1, :1]).all()  # reflect padding keeps a constant image
        assert torch.equal(u[:, 0, 0, 0] + 256 * u[:, 1, 0, 0], idx)
        assert torch.equal(u[:, 2, 0, 0], y) and torch.equal(y, s.labels[idx])
    ev = TorchLoader.eval(s, 50, mean=MEAN, std=STD, num_workers=0)
    got = epoch(ev)
    assert [len(b[1]) for b in got] == [50, 50, 20]
    assert torch.equal(denormalize(cat_field(got, 0)), s.images.long())


@pytest.mark.slow  # DataLoader worker processes
@needs_torchvision
def test_torch_loader_two_views_and_determinism():
    s = make_split(64, size=16)
    kw = dict(augment=Augment(), strong=STRONG, mean=MEAN, std=STD, seed=3)
    state = torch.get_rng_state()
    a = epoch(TorchLoader(s, 16, num_workers=0, **kw), 1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    for xw, xs, y, idx in a:
        assert xw.shape == xs.shape == (16, 3, 16, 16) and torch.equal(y, s.labels[idx])
        assert int((xw != xs).flatten(1).any(1).sum()) >= 14
    assert_same(epoch(TorchLoader(s, 16, num_workers=0, **kw), 1), a)
    assert_same(epoch(TorchLoader(s, 16, num_workers=2, **kw), 1), a)  # independent of workers
    assert not torch.equal(epoch(TorchLoader(s, 16, num_workers=0, **kw), 0)[0][0], a[0][0])


@needs_torchvision
def test_torch_loader_flip_half():
    n, W = 600, 8
    ramp = torch.arange(W, dtype=torch.uint8).expand(n, 3, 5, W).contiguous()
    s = Split(ramp, torch.zeros(n, dtype=torch.int64))
    ld = TorchLoader(s, 100, augment=Augment(crop=False), mean=MEAN, std=STD, num_workers=0)
    u = denormalize(cat_field(epoch(ld), 0))
    back = (u == torch.arange(W).flip(0)).flatten(1).all(1)
    fwd = (u == torch.arange(W)).flatten(1).all(1)
    assert (fwd ^ back).all() and abs(float(back.float().mean()) - 0.5) < 0.07


@needs_torchvision
def test_torch_loader_errors():
    s = make_split(10, size=8)
    with pytest.raises(ValueError, match="torchvision's RandAugment"):
        TorchLoader(s, 4, mean=MEAN, std=STD, strong=RandAugment(m=9.5))
    with pytest.raises(ValueError, match="torchvision's RandAugment"):
        TorchLoader(s, 4, mean=MEAN, std=STD, strong=RandAugment(ops=("identity",)))
    with pytest.raises(ValueError, match="rank"):
        TorchLoader(s, 4, mean=MEAN, std=STD, rank=1, world_size=1)
    with pytest.raises(ValueError, match="one per channel"):
        TorchLoader(s, 4, mean=(0.5,), std=(0.5,))


# ---------------------------------------------------------------------------
# batch_transform (the mixup hook)

@needs_torchvision
@pytest.mark.parametrize("kind", ["tensor", "torch"])
def test_batch_transform_gets_aligned_tensors(kind):
    s = coded_split(96)
    calls = []

    def hook(x, y, idx):
        u = denormalize(x)[:, :, 6, 6]
        assert torch.equal(u[:, 0] + 256 * u[:, 1], idx.cpu())
        assert torch.equal(u[:, 2], y.cpu())
        calls.append(len(idx))
        return x.flip(0), F.one_hot(y, 7).float()

    ld = _loader(kind, s, 32, augment=Augment(), mean=MEAN, std=STD, batch_transform=hook)
    plain = _loader(kind, s, 32, augment=Augment(), mean=MEAN, std=STD)
    for (x, t, idx), (x0, y0, idx0) in zip(ld, plain):
        assert torch.equal(idx, idx0) and torch.equal(x, x0.flip(0))
        assert t.shape == (32, 7) and torch.equal(t.argmax(1), y0)
    assert calls == [32, 32, 32]
    with pytest.raises(ValueError, match="strong view"):
        _loader(kind, s, 32, mean=MEAN, std=STD, strong=STRONG, batch_transform=hook)


# ---------------------------------------------------------------------------
# selection

@pytest.fixture
def no_dali(monkeypatch):
    monkeypatch.setitem(sys.modules, "ktgfast.data.dali", None)  # import fails


@pytest.fixture
def fake_dali(monkeypatch):
    mod = types.ModuleType("ktgfast.data.dali")
    mod.made = []

    class DaliLoader:
        def __init__(self, split, batch_size, **kw):
            mod.made.append(kw)

    class RandAugmentSpec:
        def __init__(self, **kw):
            self.kw = kw

    mod.DaliLoader, mod.RandAugmentSpec = DaliLoader, RandAugmentSpec
    mod.dali_available = lambda: True
    monkeypatch.setitem(sys.modules, "ktgfast.data.dali", mod)
    return mod


def test_resolve_loader_auto(no_dali):
    from ktgfast.data import get_dataset

    ds = get_dataset("synthetic", n_train=20, n_test=4)
    for dev in ("cpu", "cuda"):
        name, why = L.resolve_loader("auto", ds, dev)
        assert name == "tensor" and "synthetic" in why and dev in why
    assert L.resolve_loader("auto", None, "cpu")[0] == "tensor"
    name, why = L.resolve_loader("auto", "file", "cuda")
    assert name == "torch" and "ktgfast.data.dali cannot be imported" in why
    assert L.resolve_loader("auto", "file", "cpu")[0] == "torch"
    assert L.resolve_loader("torch", ds, "cpu")[0] == "torch"
    assert L.resolve_loader("tensor", "memory", "cpu")[0] == "tensor"


def test_resolve_loader_with_dali(fake_dali):
    assert L.resolve_loader("auto", "file", "cuda")[0] == "dali"
    name, why = L.resolve_loader("auto", "file", "cpu")
    assert name == "torch" and "CUDA" in why
    assert L.resolve_loader("auto", "memory", "cuda")[0] == "tensor"
    assert L.resolve_loader("dali", "memory", "cpu")[0] == "dali"
    fake_dali.dali_available = lambda: False
    with pytest.raises(L.LoaderUnavailableError, match="dali_available"):
        L.resolve_loader("dali", "memory", "cpu")
    assert L.resolve_loader("auto", "file", "cuda")[0] == "torch"


def test_resolve_loader_errors(no_dali):
    with pytest.raises(ValueError,
                       match="unknown loader 'fast'; choose one of auto, tensor, torch, dali"):
        L.resolve_loader("fast", None, "cpu")
    with pytest.raises(L.LoaderUnavailableError, match="loader 'dali' is unavailable"):
        L.resolve_loader("dali", None, "cpu")
    with pytest.raises(L.LoaderUnavailableError, match="unavailable"):
        L.make_loader("dali", make_split(8), 4, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="needs an in-memory dataset"):
        L.resolve_loader("tensor", "file", "cpu")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        L.resolve_loader("auto", "stream", "cpu")


@needs_torchvision
def test_make_loader(caplog, fake_dali):
    s = make_split(40)
    with caplog.at_level(logging.INFO, logger="ktgfast.data.loaders"):
        ld = L.make_loader("auto", s, 8, mean=MEAN, std=STD, augment=Augment(pad=2))
    assert isinstance(ld, TensorLoader) and "auto -> 'tensor'" in caplog.text
    t = L.make_loader("torch", s, 8, mean=MEAN, std=STD, num_workers=0, strong=STRONG)
    assert isinstance(t, TorchLoader) and t.views == ("weak", "strong")
    assert set(L.LOADERS) == {"tensor", "torch", "dali"}
    L.make_loader("dali", s, 8, mean=MEAN, std=STD, strong=STRONG, num_workers=3)
    kw = fake_dali.made[-1]
    assert kw["num_threads"] == 3 and kw["strong"].kw == {"n": 2, "m": 9, "fill_value": 0}
    with pytest.raises(ValueError, match="DALI's RandAugment"):
        L.make_loader("dali", s, 8, mean=MEAN, std=STD, strong=RandAugment(m=2.5))
