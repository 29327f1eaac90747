// Math of the fused attention-crop loss (thesis eqs. 4.8-4.9), shared by the
// CPU and CUDA kernels.
//
// Phase 1 runs once per slot row (slot m, sample n): the first arg-max of the
// attention map (row-major, as torch.argmax) and, only for slots that are the
// source of a correct / threshold edge, the logits' arg-max and max-probability.
// Phase 2 runs once per *destination row* (slot t, sample n): it walks every
// edge into t, crops source and destination maps around the source's peak,
// and accumulates the loss and the gradient w.r.t. the destination map.  One
// writer per output row: no atomics, results independent of the thread count.
//
// Each crop is first gathered into two flat buffers (source a, destination b),
// so that the per-crop passes are 1-D loops `for (k = lane; k < d; k += stride)`
// like the class loops of gated_edge_loss.h: the CPU runs them with one serial
// lane (stride 1, vectorisable), the CUDA kernel with one warp of 32 lanes.
#pragma once

#include <cstdint>

#include "gated_edge_loss.h"  // KTG_HD, gate_weight, enums, SerialLanes, row_max/row_argmax

namespace ktgfast {

// Encoding of the attention edge table (ktgfast/edges/kinds.py ATTENTION_LOSS_KINDS);
// edge_index / edge_params columns and gate kinds are those of the edge-loss op.
enum AttentionLossKind : int32_t { kAttPull = 0, kAttPush = 1, kNumAttLossKinds = 2 };
enum PullNorm : int64_t { kPullMean = 0, kPullSum = 1 };

constexpr int kMaxCrops = 16;           // crop sizes travel by value in the problem
constexpr double kNormalizeEps = 1e-12;  // F.normalize's default eps

// The crop sizes, by value so that a CUDA launch needs no host-to-device copy.
struct CropSizes {
  int32_t count;
  int32_t size[kMaxCrops];
};

// Serial lanes plus the warp barrier the CUDA policy needs between passes that
// map cells to lanes differently (a no-op here).
struct SerialCropLanes : SerialLanes {
  KTG_HD void sync() const {}
  // Smallest of the lanes' candidate indices.
  KTG_HD int64_t min_index(int64_t i) const { return i; }
};

// One axis of a crop window: start and length.  The window of `size` cells
// starts at center - size / 2, is shifted back inside an axis of `extent`
// cells, and is clipped to the whole axis when larger than it (as
// ktgfast.reference.crop_window).
struct Span {
  int64_t start, len;
};

KTG_HD Span crop_span(int64_t center, int64_t size, int64_t extent) {
  if (size >= extent) return {0, extent};
  int64_t s = center - size / 2;
  s = s < 0 ? 0 : s;
  s = s > extent - size ? extent - size : s;
  return {s, size};
}

// Everything one call works on, as plain pointers (shared by both back ends).
// Rows r = slot * B + n index the (M, B) grid of (slot, sample).
template <typename scalar_t, typename acc_t>
struct CropProblem {
  const scalar_t* maps;  // (M, B, H, W), unit column stride
  int64_t sm, sb, sh;    // strides of the slot, sample and row dims
  int64_t M, B, H, W, E;
  const acc_t* logits;  // (M, B, C) in the accumulation dtype, unit class stride
  int64_t lm, lb, C;
  const int64_t* labels;      // (B,)
  const int32_t* edge_index;  // (E, 4) [src, dst, loss (0 pull, 1 push), gate]
  const double* edge_params;  // (E, 4) [T (unused), coef, gate_a, gate_b]
  const double* progress;     // one value (on the device for CUDA)
  CropSizes crops;
  bool pull_mean;        // pull divided by the crop's element count d
  acc_t batch_div;       // B for mean, 1 for sum
  const acc_t* weights;  // (E,) upstream gradient per edge, or null (= 1)
  acc_t* row_loss;       // (E, B) gated per-sample loss, or null
  acc_t* row_gate;       // (E, B) gate weight, or null
  int64_t* peak;         // (M*B,) phase 1: first arg-max of the map, (row << 32) | col
  int64_t* top_class;    // (M*B,) phase 1: first arg-max of the logits (gated slots)
  acc_t* top_prob;       // (M*B,) phase 1: max softmax of the logits (gated slots)
  scalar_t* grad;        // (M*B, H*W) d(sum_e w_e L_e) / d maps, contiguous

  // (Slot and sample passed apart: no integer division in the edge loop.)
  KTG_HD const scalar_t* map(int64_t slot, int64_t n) const { return maps + slot * sm + n * sb; }
  KTG_HD const acc_t* logit_row(int64_t slot, int64_t n) const { return logits + slot * lm + n * lb; }
};

KTG_HD bool gate_reads_logits(int32_t gate) {
  return gate == kGateCorrect || gate == kGateThreshold;
}

// Vectorisation hints of the serial arg-max (ignored on the GPU).
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define KTG_SIMD_MAX_COUNT(m, n)
#define KTG_SIMD_MIN(...)
#else
#define KTG_SIMD_MAX_COUNT(m, n) KTG_PRAGMA(omp simd reduction(max : m) reduction(+ : n))
#define KTG_SIMD_MIN(...) KTG_PRAGMA(omp simd reduction(min : __VA_ARGS__))
#endif

// Serial arg-max of n contiguous values: the maximum and the NaN count in one
// vectorised pass, then the first index equal to it (or the first NaN) as a
// vectorised min-reduction (no early exit, but 8 lanes per step).
template <typename acc_t, typename scalar_t>
inline void run_max_and_nans(const scalar_t* x, int32_t n, acc_t& best, int32_t& nans) {
  acc_t m = best;
  int32_t k = nans;
  KTG_SIMD_MAX_COUNT(m, k)
  for (int32_t j = 0; j < n; ++j) {
    const acc_t v = static_cast<acc_t>(x[j]);
    m = v > m ? v : m;
    k += v != v ? 1 : 0;
  }
  best = m;
  nans = k;
}

template <typename acc_t, typename scalar_t>
inline int32_t run_first_match(const scalar_t* x, int32_t n, int32_t offset, acc_t best,
                               bool want_nan, int32_t first) {
  int32_t f = first;
  if (want_nan) {
    KTG_SIMD_MIN(f)
    for (int32_t j = 0; j < n; ++j) {
      const acc_t v = static_cast<acc_t>(x[j]);
      f = (v != v && offset + j < f) ? offset + j : f;
    }
  } else {
    KTG_SIMD_MIN(f)
    for (int32_t j = 0; j < n; ++j) {
      const acc_t v = static_cast<acc_t>(x[j]);
      f = (v == best && offset + j < f) ? offset + j : f;
    }
  }
  return f;
}

// First index (row-major) of the map's maximum; a NaN counts as larger than
// everything, as in torch.argmax.  Pass 1 finds the maximum (and whether a
// NaN is present), pass 2 the first cell equal to it.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD int64_t map_argmax(const Lanes& lanes, const scalar_t* x, int64_t sh, int64_t H,
                          int64_t W) {
  const int64_t HW = H * W;
  acc_t best = -INFINITY;
#if !defined(__CUDA_ARCH__)
  if (Lanes::kStride == 1) {
    // Rows that follow each other in memory are one run of H*W values.
    const bool flat = sh == W || H == 1;
    const int32_t runs = flat ? 1 : static_cast<int32_t>(H);
    const int32_t len = static_cast<int32_t>(flat ? HW : W);
    int32_t nans = 0;
    for (int32_t i = 0; i < runs; ++i) run_max_and_nans<acc_t>(x + i * sh, len, best, nans);
    int32_t first = static_cast<int32_t>(HW);
    for (int32_t i = 0; i < runs; ++i) {
      first = run_first_match<acc_t>(x + i * sh, len, i * len, best, nans > 0, first);
      if (first < HW) break;
    }
    return first < HW ? first : 0;  // all -inf: torch.argmax gives 0 as well
  }
#endif
  acc_t nans = 0;
  for (int64_t k = lanes.lane(); k < HW; k += Lanes::kStride) {
    const int64_t i = k / W;
    const acc_t v = static_cast<acc_t>(x[i * sh + (k - i * W)]);
    best = v > best ? v : best;
    nans += v != v ? acc_t(1) : acc_t(0);
  }
  best = lanes.max(best);
  const bool want_nan = lanes.sum(nans) > acc_t(0);
  // Each lane's first match in row-major order, then the smallest over lanes.
  int64_t first = HW;
  for (int64_t k = lanes.lane(); k < HW; k += Lanes::kStride) {
    const int64_t i = k / W;
    const acc_t v = static_cast<acc_t>(x[i * sh + (k - i * W)]);
    if (want_nan ? v != v : v == best) {
      first = k;
      break;
    }
  }
  first = lanes.min_index(first);
  return first < HW ? first : 0;
}

// sum_c exp(z_c - m) of one logits row (for the threshold gate's max-probability).
template <typename acc_t, typename Lanes>
KTG_HD acc_t row_sum_exp(const Lanes& lanes, const acc_t* z, int64_t C, acc_t m) {
  acc_t s = 0;
  const int64_t c0 = lanes.lane();
  KTG_SIMD_SUM(s)
  for (int64_t c = c0; c < C; c += Lanes::kStride) s += ktg_exp<acc_t>(z[c] - m);
  return lanes.sum(s);
}

// Phase 1, one slot row: the map's peak and, when a correct / threshold edge
// reads this slot, the logits' arg-max and max-probability.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void crop_slot_row(const Lanes& lanes, const CropProblem<scalar_t, acc_t>& P, int64_t r) {
  const int32_t m = static_cast<int32_t>(r / P.B);
  const int64_t n = r - m * P.B;
  const int64_t flat = map_argmax<acc_t>(lanes, P.map(m, n), P.sh, P.H, P.W);
  const int64_t row = flat / P.W;
  bool gated = false;
  for (int64_t e = 0; e < P.E && !gated; ++e) {
    const int32_t* ei = P.edge_index + e * kEdgeIndexCols;
    gated = ei[kColSrc] == m && gate_reads_logits(ei[kColGate]);
  }
  int64_t top = 0;
  acc_t prob = 0;
  if (gated) {
    const acc_t* z = P.logit_row(m, n);
    const acc_t zmax = row_max<acc_t>(lanes, z, P.C);
    top = row_argmax<acc_t>(lanes, z, P.C, zmax);
    prob = acc_t(1) / row_sum_exp<acc_t>(lanes, z, P.C, zmax);
  }
  if (lanes.lane() == 0) {
    P.peak[r] = (row << 32) | (flat - row * P.W);
    P.top_class[r] = top;
    P.top_prob[r] = prob;
  }
}

// Scratch of one destination row: the gradient accumulator (H*W; may be the
// gradient row itself) and the two flat crop buffers (max crop area each).
template <typename acc_t>
struct CropScratch {
  acc_t* acc;
  acc_t* a;  // source crop
  acc_t* b;  // destination crop
};

// Copies a (rows x cols) window starting at `x` (row stride sh) into flat `out`.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void gather_window(const Lanes& lanes, const scalar_t* x, int64_t sh, int64_t rows,
                          int64_t cols, acc_t* out) {
  if (Lanes::kStride == 1) {
    for (int64_t i = 0; i < rows; ++i) {
      const scalar_t* src = x + i * sh;
      acc_t* dst = out + i * cols;
      for (int64_t j = 0; j < cols; ++j) dst[j] = static_cast<acc_t>(src[j]);
    }
  } else {
    for (int64_t k = lanes.lane(); k < rows * cols; k += Lanes::kStride) {
      const int64_t i = k / cols;
      out[k] = static_cast<acc_t>(x[i * sh + (k - i * cols)]);
    }
  }
}

// One crop of one edge: returns its loss (pull: sum of squared differences of
// the normalised crops, divided by d when pull_mean; push: their dot product)
// and, when `scale` != 0, adds scale * d loss / d b into the window of `acc`
// (row stride W).  a and b hold the gathered crops (d = rows * cols cells).
//
// With u = a / na, v = b / nb, n = max(||.||, eps) (F.normalize):
//   d v / d b = (I - v v^T) / nb  where ||b|| >= eps, else I / eps;
//   pull: d L / d v = -2 q (u - v), push: d L / d v = u   (q = 1/d or 1).
// Sums are taken term by term (sum (u - v)^2, sum v (u - v)) rather than from
// ||u||^2 + ||v||^2 - 2 u.v, which would cancel when the crops agree.
template <typename acc_t, typename Lanes>
KTG_HD acc_t crop_loss_grad(const Lanes& lanes, const acc_t* a, const acc_t* b, int64_t rows,
                            int64_t cols, bool pull, acc_t q, acc_t scale, acc_t* acc, int64_t W) {
  const int64_t d = rows * cols, k0 = lanes.lane();
  acc_t sa = 0, sb = 0, sab = 0;
  KTG_SIMD_SUM(sa, sb, sab)
  for (int64_t k = k0; k < d; k += Lanes::kStride) {
    sa += a[k] * a[k];
    sb += b[k] * b[k];
    sab += a[k] * b[k];
  }
  sa = lanes.sum(sa);
  sb = lanes.sum(sb);
  sab = lanes.sum(sab);
  const acc_t eps = static_cast<acc_t>(kNormalizeEps);
  const acc_t norm_a = ktg_sqrt(sa), norm_b = ktg_sqrt(sb);
  // written so that a NaN norm stays NaN, as clamp_min does
  const acc_t ia = acc_t(1) / (norm_a < eps ? eps : norm_a);
  const acc_t ib = acc_t(1) / (norm_b < eps ? eps : norm_b);
  const bool project = norm_b >= eps;  // clamp_min passes the gradient at equality
  acc_t loss, coef_u, coef_v;          // d L/d b_k = ib (coef_u u_k + coef_v v_k)
  if (pull) {
    acc_t sq = 0, vd = 0;
    KTG_SIMD_SUM(sq, vd)
    for (int64_t k = k0; k < d; k += Lanes::kStride) {
      const acc_t u = a[k] * ia, v = b[k] * ib, diff = u - v;
      sq += diff * diff;
      vd += v * diff;
    }
    sq = lanes.sum(sq);
    vd = lanes.sum(vd);
    loss = q * sq;
    // d L/d v = -2 q (u - v); projected: minus v (v . dL/dv).
    coef_u = acc_t(-2) * q * scale;
    coef_v = -coef_u - (project ? coef_u * vd : acc_t(0));
  } else {
    loss = sab * ia * ib;
    coef_u = scale;
    coef_v = project ? -scale * loss : acc_t(0);
  }
  if (scale != acc_t(0)) {
    const acc_t cu = coef_u * ib * ia, cv = coef_v * ib * ib;
    if (Lanes::kStride == 1) {
      for (int64_t i = 0; i < rows; ++i) {
        acc_t* out = acc + i * W;
        const acc_t* ar = a + i * cols;
        const acc_t* br = b + i * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] += cu * ar[j] + cv * br[j];
      }
    } else {
      lanes.sync();  // earlier crops of this row wrote overlapping cells from other lanes
      for (int64_t k = k0; k < d; k += Lanes::kStride) {
        const int64_t i = k / cols;
        acc[i * W + (k - i * cols)] += cu * a[k] + cv * b[k];
      }
    }
  }
  return loss;
}

// Phase 2, one destination row (slot t, sample n): every incoming edge's gate,
// loss and gradient.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void crop_edge_row(const Lanes& lanes, const CropProblem<scalar_t, acc_t>& P, int64_t r,
                          CropScratch<acc_t> scratch) {
  const int64_t B = P.B, H = P.H, W = P.W, HW = H * W;
  const int32_t t = static_cast<int32_t>(r / B);
  const int64_t n = r - t * B;
  acc_t* acc = scratch.acc;
  for (int64_t k = lanes.lane(); k < HW; k += Lanes::kStride) acc[k] = acc_t(0);
  const scalar_t* dst_map = P.map(t, n);
  const int64_t label = P.labels[n];
  const double progress = *P.progress;
  const acc_t inv_crops = acc_t(1) / static_cast<acc_t>(P.crops.count);

  for (int64_t e = 0; e < P.E; ++e) {
    const int32_t* ei = P.edge_index + e * kEdgeIndexCols;
    if (ei[kColDst] != t || ei[kColGate] == kGateCutoff) continue;
    const double* ep = P.edge_params + e * kEdgeParamCols;
    const int32_t gate = ei[kColGate];
    const bool pull = ei[kColLoss] == kAttPull;
    const int64_t src = ei[kColSrc], rs = src * B + n;  // the source's row
#if defined(__CUDA_ARCH__)
    CUDA_KERNEL_ASSERT(ei[kColSrc] >= 0 && ei[kColSrc] < P.M && "attention_crop_loss: bad source");
#endif
    const acc_t upstream = P.weights ? P.weights[e] : acc_t(1);
    const acc_t g = static_cast<acc_t>(gate_weight(gate, ep[kColGateA], ep[kColGateB], progress,
                                                   false, P.top_class[rs] == label,
                                                   static_cast<double>(P.top_prob[rs])));
    if (P.row_gate) P.row_gate[e * B + n] = g;
    // A closed gate contributes nothing: skipping also avoids 0 * inf.
    if (g == acc_t(0) || (upstream == acc_t(0) && !P.row_loss)) {
      if (P.row_loss) P.row_loss[e * B + n] = 0;
      continue;
    }
    const acc_t scale =
        static_cast<acc_t>(ep[kColCoef]) * g * upstream * inv_crops / P.batch_div;
    const int64_t peak = P.peak[rs], ci = peak >> 32, cj = peak & 0xffffffff;
    const scalar_t* src_map = P.map(src, n);
    acc_t loss = 0;
    for (int32_t c = 0; c < P.crops.count; ++c) {
      const Span rw = crop_span(ci, P.crops.size[c], H), cw = crop_span(cj, P.crops.size[c], W);
      const int64_t off = rw.start * P.sh + cw.start;
      gather_window<acc_t>(lanes, src_map + off, P.sh, rw.len, cw.len, scratch.a);
      gather_window<acc_t>(lanes, dst_map + off, P.sh, rw.len, cw.len, scratch.b);
      const acc_t q = P.pull_mean ? acc_t(1) / static_cast<acc_t>(rw.len * cw.len) : acc_t(1);
      loss += crop_loss_grad<acc_t>(lanes, scratch.a, scratch.b, rw.len, cw.len, pull, q, scale,
                                    acc + rw.start * W + cw.start, W);
    }
    if (P.row_loss) P.row_loss[e * B + n] = g * loss * inv_crops;
  }

  // Convert into the gradient unless we accumulated in it directly.
  scalar_t* out = P.grad + r * HW;
  if (static_cast<void*>(out) != static_cast<void*>(acc)) {
    lanes.sync();
    for (int64_t k = lanes.lane(); k < HW; k += Lanes::kStride) out[k] = static_cast<scalar_t>(acc[k]);
  }
}

}  // namespace ktgfast
