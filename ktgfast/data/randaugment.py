"""Batched RandAugment on uint8 ``(B, C, H, W)`` image tensors, on any device.

Every sample of a batch gets ``n`` ops in sequence, each chosen uniformly
from ``ops`` with its own random sign; no per-sample Python loop runs.  In
each round the batch is grouped by the chosen op (a stable sort of the op ids,
done on the host where the parameters live) and every op runs once, batched,
on its group with per-sample magnitudes; the group's rows are gathered with
``index_select`` and written back with ``index_copy_``.  The five geometric
ops share one group: each builds per-sample 2x3 source matrices and a single
nearest-neighbour gather warps them all.  The group sizes are host integers,
so a CUDA batch costs no device synchronisation, only one small
host-to-device copy of the sort order and magnitudes per batch.

The op set is torchvision's RandAugment (``torchvision.transforms.v2``), all
14 ops, with the same magnitude scale; ``OPS`` maps names to

=============  ======  =====================================================
op             signed  value at level ``L`` (``L`` in ``[0, 30]``)
=============  ======  =====================================================
identity               --
shear_x        yes     shear factor ``0.3 L/30`` (about the top-left corner)
shear_y        yes     shear factor ``0.3 L/30``
translate_x    yes     ``trunc(150/331 * W * L/30)`` px
translate_y    yes     ``trunc(150/331 * H * L/30)`` px
rotate         yes     ``30 L/30`` degrees, counter-clockwise, about the centre
brightness     yes     factor ``1 + 0.9 L/30`` (blend with black)
color          yes     factor ``1 + 0.9 L/30`` (blend with grayscale)
contrast       yes     factor ``1 + 0.9 L/30`` (blend with the mean gray)
sharpness      yes     factor ``1 + 0.9 L/30`` (blend with a 3x3 smoothing)
posterize      no      keep ``round(8 - L/7.5)`` bits (8 ... 4)
solarize       no      invert pixels ``>= 255 (1 - L/30)``
autocontrast   no      stretch each channel to [0, 255] (no magnitude)
equalize       no      per-channel histogram equalisation (no magnitude)
=============  ======  =====================================================

Magnitude convention: ``m`` is torchvision's ``magnitude`` on its default
31-bin scale, i.e. a level in ``[0, 30]`` (``m = 9`` is torchvision's
default; a 0..10 scale as in some papers is ``m30 = 3 * m10``).  Levels may
be fractional.  ``random_magnitude=True`` draws every op's level uniformly
from ``[0, m]`` (the FixMatch-style variant).  A signed op uses ``-L`` with
probability 1/2.  Identity holds at level 0 for every op except solarize
(threshold 255: pixels equal to 255 still invert, as in torchvision),
autocontrast and equalize (magnitude-free).

Pixel rules follow torchvision's uint8 kernels: blends are computed in
float32, clamped and truncated to uint8; the smoothing of ``sharpness`` is
rounded and leaves the one-pixel border untouched; grayscale uses the
``0.2989 / 0.587 / 0.114`` weights, floored (``color`` is the identity on
one-channel images; images with 2 or > 3 channels use the channel mean as
gray).  Geometric ops sample nearest-neighbour (torchvision's default
interpolation for RandAugment) and fill uncovered pixels with ``fill``.
``tests/test_loaders.py`` checks every op against torchvision's functional
kernels at levels 0, 9, 30 (and -17): identical pixels, except ``color``
(float rounding of the gray blend: off by one in < 2 % of pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

LEVELS = 30  # levels run 0..LEVELS (torchvision: num_magnitude_bins = 31)

# ---------------------------------------------------------------------------
# helpers


def _col(v: torch.Tensor) -> torch.Tensor:
    """(b,) -> (b, 1, 1, 1) for broadcasting over an image batch."""
    return v.view(-1, 1, 1, 1)


def _to_u8(xf: torch.Tensor) -> torch.Tensor:
    return xf.clamp_(0, 255).to(torch.uint8)  # truncates, like torchvision


def _gray(xf: torch.Tensor) -> torch.Tensor:
    """float ``(b, C, H, W)`` -> floored gray ``(b, 1, H, W)``."""
    C = xf.shape[1]
    if C == 1:
        return xf
    if C == 3:
        g = (xf[:, 0:1] * 0.2989).add_(xf[:, 1:2], alpha=0.587).add_(xf[:, 2:3], alpha=0.114)
    else:
        g = xf.mean(1, keepdim=True)
    return g.floor_()


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * degenerate`` per sample, as uint8."""
    f = _col(factor)
    return _to_u8(x.float() * f + degenerate * (1 - f))


def _warp(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    """Nearest-neighbour inverse warp: output pixel (row ``i``, column ``j``)
    reads the source at column ``m[0] @ (j, i, 1)``, row ``m[1] @ (j, i, 1)``
    (rounded half to even); ``m``: per-sample ``(b, 2, 3)``.  Uncovered
    pixels get ``fill``."""
    B, C, H, W = x.shape
    j = torch.arange(W, device=x.device, dtype=torch.float32).view(1, 1, W)
    i = torch.arange(H, device=x.device, dtype=torch.float32).view(1, H, 1)
    m = m.float().view(B, 6, 1, 1).unbind(1)
    xi = (m[0] * j + m[1] * i + m[2]).round_().long()                       # (B, H, W)
    yi = (m[3] * j + m[4] * i + m[5]).round_().long()
    ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
    src = (yi.clamp_(0, H - 1) * W + xi.clamp_(0, W - 1)).view(B, 1, H * W).expand(B, C, H * W)
    out = x.reshape(B, C, H * W).gather(2, src).view(B, C, H, W)
    ok = ok[:, None]
    out = out * ok  # (a multiply: much cheaper than masked_fill / where on uint8)
    if fill:
        out += (~ok).to(torch.uint8) * fill
    return out


def _matrix(like: torch.Tensor, *entries) -> torch.Tensor:
    """``(b, 2, 3)`` from six per-sample entries (tensors shaped like ``like``,
    or numbers)."""
    full = [t if isinstance(t, torch.Tensor) else torch.full_like(like, float(t)) for t in entries]
    return torch.stack(full, 1).view(-1, 2, 3)


def _about(like, a, b, d, e, cx: float, cy: float) -> torch.Tensor:
    """The linear map ``[[a, b], [d, e]]`` applied about the point ``(cx, cy)``
    (column, row), as an absolute ``(b, 2, 3)`` matrix."""
    return _matrix(like, a, b, cx - (a * cx + b * cy), d, e, cy - (d * cx + e * cy))


# ---------------------------------------------------------------------------
# the ops.  Pixel ops: fn(x uint8 (b, C, H, W), level float32 (b,) signed,
# fill) -> uint8.  Warp ops: fn(level, H, W) -> (b, 2, 3) source-position
# matrices; all warp ops of a round share one _warp call.


def _identity(x, level, fill):
    return x


def _shear_x(level, H, W):
    s = 0.3 * level / LEVELS
    # about the image's top-left corner (torchvision: centre [0, 0])
    return _about(level, 1, s, 0, 1, -0.5, -0.5)


def _shear_y(level, H, W):
    s = 0.3 * level / LEVELS
    return _about(level, 1, 0, s, 1, -0.5, -0.5)


def _translate_x(level, H, W):
    t = (150.0 / 331.0 * W * level / LEVELS).trunc()  # whole pixels, as torchvision
    return _matrix(level, 1, 0, -t, 0, 1, 0)


def _translate_y(level, H, W):
    t = (150.0 / 331.0 * H * level / LEVELS).trunc()
    return _matrix(level, 1, 0, 0, 0, 1, -t)


def _rotate(level, H, W):
    theta = torch.deg2rad(30.0 * level / LEVELS)
    c, s = theta.cos(), theta.sin()
    # counter-clockwise on screen (rows grow downwards): the source of an
    # output pixel is its position rotated clockwise about the centre
    return _about(level, c, -s, s, c, (W - 1) / 2, (H - 1) / 2)


def _factor(level):
    return 1 + 0.9 * level / LEVELS


def _brightness(x, level, fill):
    return _to_u8(x.float() * _col(_factor(level)))


def _color(x, level, fill):
    if x.shape[1] == 1:
        return x
    xf = x.float()
    return _blend(x, _gray(xf), _factor(level))


def _contrast(x, level, fill):
    mean = _gray(x.float()).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, _factor(level))


def _sharpness(x, level, fill):
    B, C, H, W = x.shape
    if H <= 2 or W <= 2:
        return x
    xf = x.float()
    # smoothing kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the interior,
    # as exact integer sums of shifted slices (a 3x3 depthwise conv is far
    # slower on small images)
    rows = xf[:, :, :-2] + xf[:, :, 1:-1] + xf[:, :, 2:]                     # (B, C, H-2, W)
    inner = xf[:, :, 1:-1, 1:-1]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = box.add_(inner, alpha=4).div_(13).round_()
    inner.add_((smooth - inner) * (1 - _col(_factor(level))))  # the border is kept
    return _to_u8(xf)


def _posterize(x, level, fill):
    bits = (8 - level.abs() / 7.5).round().clamp(0, 8).to(torch.int32)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8)
    return x & _col(mask)


def _solarize(x, level, fill):
    threshold = 255.0 * (1 - level.abs() / LEVELS)
    flip = (x.float() >= _col(threshold)).to(torch.uint8).mul_(255)
    return x ^ flip  # 255 - x where flip


def _autocontrast(x, level, fill):
    xf = x.float()
    lo = xf.amin(dim=(2, 3), keepdim=True)
    hi = xf.amax(dim=(2, 3), keepdim=True)
    flat = hi == lo
    lo = lo.masked_fill(flat, 0.0)
    span = ((hi - lo) * (1.0 / 255.0)).masked_fill(flat, 1.0)
    return _to_u8((xf - lo) / span)


def _equalize(x, level, fill):
    """PIL's histogram equalisation per channel: ``step = (pixels not at the
    channel's maximum value) // 255``, ``lut[v] = (cdf[v-1] + step // 2) // step``,
    ``lut[0] = 0``; a channel with ``step == 0`` is left as it is."""
    B, C, H, W = x.shape
    rows = B * C
    flat = x.reshape(rows, H * W).long()
    # scatter_add, not bincount: CUDA's bincount reads the max back to the host
    hist = torch.zeros(rows, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones(1, dtype=torch.long, device=x.device).expand_as(flat))
    top = flat.amax(1, keepdim=True)
    step = (H * W - hist.gather(1, top)) // 255                              # (rows, 1)
    cdf = hist.cumsum(1)
    lut = (cdf[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = F.pad(lut, (1, 0))                                                  # lut[0] = 0
    out = lut.gather(1, flat)
    out = torch.where(step > 0, out, flat)
    return out.to(torch.uint8).view(B, C, H, W)


@dataclass(frozen=True)
class Op:
    fn: Callable
    signed: bool  # a random sign flips the level
    warp: bool    # fn(level, H, W) -> (b, 2, 3) source matrices; else fn(x, level, fill)


# in torchvision's order
OPS: dict[str, Op] = {
    "identity": Op(_identity, False, False),
    "shear_x": Op(_shear_x, True, True),
    "shear_y": Op(_shear_y, True, True),
    "translate_x": Op(_translate_x, True, True),
    "translate_y": Op(_translate_y, True, True),
    "rotate": Op(_rotate, True, True),
    "brightness": Op(_brightness, True, False),
    "color": Op(_color, True, False),
    "contrast": Op(_contrast, True, False),
    "sharpness": Op(_sharpness, True, False),
    "posterize": Op(_posterize, False, False),
    "solarize": Op(_solarize, False, False),
    "autocontrast": Op(_autocontrast, False, False),
    "equalize": Op(_equalize, False, False),
}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def apply_op(name: str, x: torch.Tensor, level, fill: int = 0) -> torch.Tensor:
    """Apply op ``name`` to every sample of a uint8 batch at ``level`` (a number
    or a per-sample ``(B,)`` tensor, signed for signed ops); returns uint8."""
    if name not in OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; choose from {', '.join(OP_NAMES)}")
    _check_images(x)
    level = torch.as_tensor(level, dtype=torch.float32, device=x.device).expand(x.shape[0])
    op = OPS[name]
    if op.warp:
        return _warp(x, op.fn(level.contiguous(), *x.shape[2:]), fill)
    return op.fn(x, level.contiguous(), fill)


def _check_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"RandAugment needs uint8 (B, C, H, W) images, got {x.dtype} "
                         f"{tuple(x.shape)}")


# ---------------------------------------------------------------------------
# sampling and the batched application


@dataclass(frozen=True)
class RandAugmentParams:
    """Random choices for ``B`` samples, on the host: ``op`` int64 ``(n, B)``
    indices into the spec's ``ops``; ``level`` float32 ``(n, B)`` signed
    levels (negative only for signed ops)."""

    op: torch.Tensor
    level: torch.Tensor

    def take(self, sl) -> "RandAugmentParams":
        return RandAugmentParams(self.op[:, sl], self.level[:, sl])


@dataclass(frozen=True)
class RandAugment:
    """RandAugment spec: ``n`` ops per sample from ``ops`` (default: all of
    ``OP_NAMES``) at level ``m`` on the 0..30 scale (see the module doc);
    ``random_magnitude``: each op's level uniform in ``[0, m]``; ``fill``:
    the value of pixels a geometric op uncovers."""

    n: int = 2
    m: float = 9.0
    ops: tuple[str, ...] = OP_NAMES
    random_magnitude: bool = False
    fill: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ops, list):
            object.__setattr__(self, "ops", tuple(self.ops))
        if self.n < 0:
            raise ValueError(f"RandAugment n must be >= 0, got {self.n}")
        if not 0 <= self.m <= LEVELS:
            raise ValueError(f"RandAugment m must lie in [0, {LEVELS}], got {self.m}")
        if not self.ops:
            raise ValueError("RandAugment needs at least one op")
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment op(s) {unknown}; "
                             f"choose from {', '.join(OP_NAMES)}")
        if not 0 <= self.fill <= 255:
            raise ValueError(f"fill must be a uint8 value, got {self.fill}")

    @property
    def standard(self) -> bool:
        """Expressible by torchvision's / DALI's RandAugment: every op, an
        integer ``m``, one fixed level."""
        return tuple(self.ops) == OP_NAMES and not self.random_magnitude and self.m == int(self.m)

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> RandAugmentParams:
        """Choices for ``count`` samples from a CPU ``generator``."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("RandAugment parameters are drawn on the host: pass a CPU generator")
        shape = (self.n, count)
        op = torch.randint(0, len(self.ops), shape, generator=generator)
        if self.random_magnitude:
            level = torch.rand(shape, generator=generator) * self.m
        else:
            level = torch.full(shape, float(self.m))
        negative = torch.rand(shape, generator=generator) < 0.5
        signed = torch.tensor([OPS[o].signed for o in self.ops])[op]
        level = torch.where(negative & signed, -level, level)
        return RandAugmentParams(op, level)

    def apply(self, x: torch.Tensor, params: RandAugmentParams) -> torch.Tensor:
        """``x`` (uint8 ``(B, C, H, W)``, any device) augmented by ``params``
        (host tensors for B samples); returns a new tensor."""
        _check_images(x)
        n, B = params.op.shape
        if B != x.shape[0] or params.op.device.type != "cpu":
            raise ValueError(f"params must be host tensors for {x.shape[0]} samples, got "
                             f"{B} on {params.op.device}")
        out = x.clone()
        if n == 0 or B == 0:
            return out
        H, W = x.shape[2:]
        # Group each round's samples by op: a stable sort whose key puts all
        # warp ops first, so they form one block that one _warp call serves.
        K = len(self.ops)
        warp = [OPS[o].warp for o in self.ops]
        rank = sorted(range(K), key=lambda k: (not warp[k], k))
        key = torch.empty(K, dtype=torch.long)
        key[torch.tensor(rank)] = torch.arange(K)
        order = torch.argsort(key[params.op], dim=1, stable=True)
        counts = torch.stack([torch.bincount(r, minlength=K) for r in params.op]).tolist()
        levels = params.level.gather(1, order)
        # one host-to-device copy per batch; no device -> host synchronisation
        packed = torch.cat([order.double(), levels.double()]).to(x.device, non_blocking=True)
        order_d, levels_d = packed[:n].long(), packed[n:].float()
        for r in range(n):
            segments, start = [], 0
            for k in rank:
                segments.append((k, start, start + counts[r][k]))
                start += counts[r][k]
            mats = [OPS[self.ops[k]].fn(levels_d[r, a:b], H, W) for k, a, b in segments
                    if warp[k] and b > a]
            if mats:
                a, b = segments[0][1], max(e for k, _, e in segments if warp[k])
                idx = order_d[r, a:b]
                out.index_copy_(0, idx, _warp(out.index_select(0, idx), torch.cat(mats), self.fill))
            for k, a, b in segments:
                if warp[k] or b == a or self.ops[k] == "identity":
                    continue
                idx = order_d[r, a:b]
                res = OPS[self.ops[k]].fn(out.index_select(0, idx), levels_d[r, a:b], self.fill)
                out.index_copy_(0, idx, res)
        return out

    def __call__(self, x: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sample and apply in one go."""
        return self.apply(x, self.sample(x.shape[0], generator))


def rand_augment(x: torch.Tensor, n: int = 2, m: float = 9.0,
                 generator: Optional[torch.Generator] = None, **options) -> torch.Tensor:
    """Functional form: ``RandAugment(n, m, **options)(x, generator)``."""
    return RandAugment(n=n, m=m, **options)(x, generator)


__all__ = ["LEVELS", "OPS", "OP_NAMES", "Op", "RandAugment", "RandAugmentParams", "apply_op",
           "rand_augment"]
