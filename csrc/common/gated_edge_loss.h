// Math of the fused gated edge loss, shared by the CPU and CUDA kernels.
//
// One call processes one *destination row* (destination slot t, sample n): it
// walks every edge whose destination is t, computes the source statistics, the
// per-sample gate weight and loss, writes them to row buffers and accumulates the
// gradient w.r.t. the destination logits into `acc`.  The loops over classes are
// written as `for (c = lanes.lane(); c < C; c += Lanes::kStride)` and every
// reduction goes through `lanes`, so the CPU runs this with one serial lane
// (stride 1, vectorisable) and the CUDA kernel with one warp of 32 lanes.  That
// keeps the device code down to indexing and warp shuffles: the CPU test suite
// executes every line of the math the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT
#define KTG_HD __host__ __device__ __forceinline__
#else
#define KTG_HD inline
#endif

// Vectorisation hints for the CPU's stride-1 class loops (ignored on the GPU).
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define KTG_SIMD_SUM(...)
#define KTG_SIMD_MAX(...)
#else
#define KTG_PRAGMA(x) _Pragma(#x)
#define KTG_SIMD_SUM(...) KTG_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define KTG_SIMD_MAX(...) KTG_PRAGMA(omp simd reduction(max : __VA_ARGS__))
#endif

namespace ktgfast {

// Edge-table encoding.  Keep in sync with ktgfast/edges/kinds.py (LOSSES, GATES;
// tests/test_edge_kinds.py compares these enums with the table).
enum LossKind : int32_t {
  kLossKL = 0,   // T^2-scalable KL(p_s || p_t) at temperature T (label source: CE)
  kLossCE = 1,   // cross-entropy of the destination (at T) to the label
  kLossCos = 2,  // cosine similarity of p_s and p_t (push; minimised)
  kLossPL = 3,   // cross-entropy to the one-hot of the source's arg-max
  kNumLossKinds = 4,
};

enum GateKind : int32_t {
  kGateThrough = 0,
  kGateCutoff = 1,
  kGateLinear = 2,     // progress
  kGateNegLinear = 3,  // 1 - progress
  kGateCorrect = 4,    // 1[argmax z_s == y]; label source: 1
  kGateSine = 5,       // 0.5 + 0.5 sin(2 pi f progress + phi)
  kGateThreshold = 6,  // 1[max softmax(z_s) > tau] at T = 1; label source: 1
  kNumGateKinds = 7,
};

// edge_index columns (int32, (E, 4)) and edge_params columns (float64, (E, 4)).
enum EdgeIndexCol : int { kColSrc = 0, kColDst = 1, kColLoss = 2, kColGate = 3 };
enum EdgeParamCol : int { kColTemp = 0, kColCoef = 1, kColGateA = 2, kColGateB = 3 };
constexpr int kEdgeIndexCols = 4;
constexpr int kEdgeParamCols = 4;
constexpr int32_t kLabelSource = -1;

enum Reduction : int64_t { kReduceMean = 0, kReduceSum = 1 };

// ---------------------------------------------------------------------------
// exp: a branch-free Cephes-style polynomial for float on the host, so the
// class loops vectorise (glibc's expf is a scalar call); accurate to ~2 ulp.
// Returns exactly 0 for x below the float range (x = -inf included).
// Unqualified calls after `using std::f` pick the float / double overloads on
// the host and CUDA's device overloads under nvcc.
template <typename T>
KTG_HD T ktg_log(T x) {
  using std::log;
  return log(x);
}
template <typename T>
KTG_HD T ktg_sqrt(T x) {
  using std::sqrt;
  return sqrt(x);
}
template <typename T>
KTG_HD T ktg_sin(T x) {
  using std::sin;
  return sin(x);
}
template <typename T>
KTG_HD T ktg_exp(T x) {
  using std::exp;
  return exp(x);
}

template <>
KTG_HD float ktg_exp<float>(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  // Written so that gcc if-converts and vectorises it: selects, no calls.
  // Callers pass x <= 0 (shifted logits); above the float range it saturates
  // at exp(88.38) instead of returning inf.
  const float hi = 88.3762626647949f, lo = -87.3365478515625f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  // n = round(x / ln2) by the 1.5 * 2^23 trick (SSE2 has no vector floor).
  const float fx = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // Cody-Waite range reduction: r = xc - n ln2, in two parts for accuracy.
  float r = xc - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;  // 2^n
#if defined(__CUDACC__)
  float scale;  // nvcc's host front end: no __builtin_bit_cast
  std::memcpy(&scale, &bits, sizeof(scale));
#else
  const float scale = __builtin_bit_cast(float, bits);
#endif
  const float y = p * scale;
  return x < lo ? 0.0f : y;
#endif
}

// ---------------------------------------------------------------------------
// Per-sample gate weight (eqs. 3.4-3.8, 5.6-5.8), in double on every path so
// that e.g. Sine(0, 3pi/2) is exactly 0 on the CPU and the GPU alike.  A weight
// that is not > 0 (negative from a progress outside [0, 1], or NaN) closes the
// gate, as in the reference.
KTG_HD double gate_weight(int32_t gate, double a, double b, double progress, bool label_source,
                          bool src_correct, double src_maxprob) {
  double g = 0.0;  // Cutoff (and anything unknown) carries nothing.
  switch (gate) {
    case kGateThrough: g = 1.0; break;
    case kGateLinear: g = progress; break;
    case kGateNegLinear: g = 1.0 - progress; break;
    case kGateCorrect: g = (label_source || src_correct) ? 1.0 : 0.0; break;
    case kGateSine: g = 0.5 + 0.5 * ktg_sin(6.283185307179586476925286766559 * a * progress + b); break;
    case kGateThreshold: g = (label_source || src_maxprob > a) ? 1.0 : 0.0; break;
    default: break;
  }
  return g > 0.0 ? g : 0.0;
}

// ---------------------------------------------------------------------------
// Lane policies.  Serial: one lane, stride 1.  The CUDA warp policy lives in the
// .cu file (it needs __shfl_xor_sync).
struct SerialLanes {
  static constexpr int kStride = 1;
  KTG_HD int lane() const { return 0; }
  KTG_HD bool owns(int64_t) const { return true; }
  template <typename T>
  KTG_HD T sum(T v) const { return v; }
  template <typename T>
  KTG_HD T max(T v) const { return v; }
  // (value, index) arg-max across lanes; ties resolve to the smallest index.
  template <typename T>
  KTG_HD void argmax(T&, int64_t&) const {}
};

// Row maximum (vectorisable).
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD acc_t row_max(const Lanes& lanes, const scalar_t* z, int64_t C) {
  acc_t best = -INFINITY;
  const int64_t c0 = lanes.lane();
  KTG_SIMD_MAX(best)
  for (int64_t c = c0; c < C; c += Lanes::kStride) {
    const acc_t v = static_cast<acc_t>(z[c]);
    best = v > best ? v : best;
  }
  return lanes.max(best);
}

// First arg-max of the row (the max itself is `m`, already known).
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD int64_t row_argmax(const Lanes& lanes, const scalar_t* z, int64_t C, acc_t m) {
  int64_t first = C;  // C = none (NaN rows)
  for (int64_t c = lanes.lane(); c < C; c += Lanes::kStride) {
    if (static_cast<acc_t>(z[c]) == m) {
      first = c;
      break;
    }
  }
  acc_t v = m;
  lanes.argmax(v, first);
  return first < C ? first : 0;
}

// e[c] = exp((z_c - m) / T) into `e`; returns sum_c e[c].
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD acc_t row_exp(const Lanes& lanes, const scalar_t* z, int64_t C, acc_t m, acc_t inv_t,
                     acc_t* e) {
  acc_t s = 0;
  const int64_t c0 = lanes.lane();
  KTG_SIMD_SUM(s)
  for (int64_t c = c0; c < C; c += Lanes::kStride) {
    const acc_t v = ktg_exp<acc_t>((static_cast<acc_t>(z[c]) - m) * inv_t);
    e[c] = v;
    s += v;
  }
  return lanes.sum(s);
}

// Everything one call works on, as plain pointers (shared by both back ends).
// Rows r = slot * B + n index the (M, B) grid of (slot, sample).
template <typename scalar_t, typename acc_t>
struct EdgeLossProblem {
  const scalar_t* z;  // logits (M, B, C), unit class stride
  int64_t sm, sb;     // strides of the slot and sample dims
  int64_t M, B, C, E;
  const int64_t* labels;      // (B,)
  const int32_t* edge_index;  // (E, 4)
  const double* edge_params;  // (E, 4)
  const double* progress;     // one value (on the device for CUDA)
  acc_t batch_div;            // B for mean, 1 for sum
  const acc_t* weights;       // (E,) upstream gradient per edge, or null (= 1)
  acc_t* row_loss;            // (E, B) gated per-sample loss, or null
  acc_t* row_gate;            // (E, B) gate weight, or null
  acc_t* e1;                  // (M*B, C) phase 1: exp(z - max) at T = 1
  acc_t* stats;               // (M*B, 2) phase 1: [max, sum of e1]
  int64_t* argmax;            // (M*B,)  phase 1: first arg-max
  scalar_t* grad;             // (M*B, C) d(sum_e w_e L_e) / d logits, contiguous

  KTG_HD const scalar_t* row(int64_t r) const { return z + (r / B) * sm + (r % B) * sb; }
};

// Phase 1, one slot row: max, first arg-max and the T = 1 exponentials that
// every edge touching this row (as source or destination) reuses.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void slot_stats_row(const Lanes& lanes, const EdgeLossProblem<scalar_t, acc_t>& P,
                           int64_t r) {
  const scalar_t* z = P.row(r);
  const acc_t m = row_max<acc_t>(lanes, z, P.C);
  const int64_t arg = row_argmax<acc_t>(lanes, z, P.C, m);
  const acc_t s = row_exp<acc_t>(lanes, z, P.C, m, acc_t(1), P.e1 + r * P.C);
  if (lanes.lane() == 0) {
    P.stats[2 * r] = m;
    P.stats[2 * r + 1] = s;
    P.argmax[r] = arg;
  }
}

// Per-row scratch, C elements each (the CPU uses thread-local vectors, the GPU
// a workspace; each lane only touches its own classes).
template <typename acc_t>
struct RowScratch {
  acc_t* acc;  // gradient accumulator (may be the gradient row itself)
  acc_t* et;   // destination exps at a temperature != 1
  acc_t* es;   // source exps at a temperature != 1
};

// Phase 2, one destination row (slot t, sample n): every incoming edge's
// gate, loss and gradient.  At T = 1 (the common case) no exponential is
// computed here at all: phase 1's e1 rows serve source and destination.
// Edges at another temperature compute theirs into scratch (the destination's
// cached across consecutive edges of equal T).
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void edge_loss_row(const Lanes& lanes, const EdgeLossProblem<scalar_t, acc_t>& P,
                          int64_t r, RowScratch<acc_t> scratch) {
  const int64_t C = P.C, B = P.B, n = r % B;
  const int32_t t = static_cast<int32_t>(r / B);
  const scalar_t* zt = P.row(r);
  acc_t* acc = scratch.acc;
  const int64_t c0 = lanes.lane();
  for (int64_t c = c0; c < C; c += Lanes::kStride) acc[c] = acc_t(0);

  const acc_t mt = P.stats[2 * r];
  const acc_t* et1 = P.e1 + r * C;
  const acc_t st1 = P.stats[2 * r + 1];
  acc_t cached_inv_t = -1, st_cached = 0;  // destination at a temperature != 1
  const double progress = *P.progress;
  const int64_t y = P.labels[n];

  for (int64_t e = 0; e < P.E; ++e) {
    const int32_t* ei = P.edge_index + e * kEdgeIndexCols;
    if (ei[kColDst] != t || ei[kColGate] == kGateCutoff) continue;
    const double* ep = P.edge_params + e * kEdgeParamCols;
    const int32_t src = ei[kColSrc], kind = ei[kColLoss], gate = ei[kColGate];
    const acc_t inv_t = acc_t(1) / static_cast<acc_t>(ep[kColTemp]);
    const bool unit_t = inv_t == acc_t(1);
    const acc_t upstream = P.weights ? P.weights[e] : acc_t(1);
    const bool label_source = src == kLabelSource;
    const bool to_label = label_source || kind == kLossCE;
    const int64_t rs = label_source ? 0 : src * B + n;  // the source's row

    const acc_t g = static_cast<acc_t>(gate_weight(
        gate, ep[kColGateA], ep[kColGateB], progress, label_source,
        !label_source && P.argmax[rs] == y,
        label_source ? 1.0 : 1.0 / static_cast<double>(P.stats[2 * rs + 1])));
    if (P.row_gate) P.row_gate[e * B + n] = g;
    // A closed gate contributes nothing: skipping also avoids 0 * inf.
    if (g == acc_t(0) || (upstream == acc_t(0) && !P.row_loss)) {
      if (P.row_loss) P.row_loss[e * B + n] = 0;
      continue;
    }

    // Destination exponentials and normaliser at this edge's temperature.
    const acc_t* et = et1;
    acc_t st = st1;
    if (!unit_t) {
      if (inv_t != cached_inv_t) {
        cached_inv_t = inv_t;
        st_cached = row_exp<acc_t>(lanes, zt, C, mt, inv_t, scratch.et);
      }
      et = scratch.et;
      st = st_cached;
    }
    const acc_t log_st = ktg_log(st);
    const acc_t scale = static_cast<acc_t>(ep[kColCoef]) * g * upstream * inv_t / P.batch_div;
    const acc_t inv_st = acc_t(1) / st;
    acc_t loss;
    if (to_label || kind == kLossPL) {
      // Cross-entropy at T: log S_t - (z_t[y] - m_t) / T; grad (q - onehot) / T.
      const int64_t target = to_label ? y : P.argmax[rs];
#if defined(__CUDA_ARCH__)
      CUDA_KERNEL_ASSERT(target >= 0 && target < C && "gated_edge_loss: label out of range");
#endif
      loss = log_st - (static_cast<acc_t>(zt[target]) - mt) * inv_t;
      const acc_t sq = scale * inv_st;
      for (int64_t c = c0; c < C; c += Lanes::kStride) acc[c] += sq * et[c];
      if (lanes.owns(target)) acc[target] -= scale;
    } else {
      const scalar_t* zs = P.row(rs);
      const acc_t ms = P.stats[2 * rs];
      const acc_t* es = P.e1 + rs * C;
      acc_t ss = P.stats[2 * rs + 1];
      if (!unit_t) {
        ss = row_exp<acc_t>(lanes, zs, C, ms, inv_t, scratch.es);
        es = scratch.es;
      }
      if (kind == kLossKL) {
        // KL = sum_c p_c ((zs_c - ms) - (zt_c - mt)) / T - log S_s + log S_t on
        // shifted logits (no cancellation for large logits); 0 log 0 = 0.  The
        // loss reduction and the gradient share one pass.
        const acc_t inv_ss = acc_t(1) / ss;
        const acc_t sq = scale * inv_st, sp = scale * inv_ss;
        acc_t w = 0;
        KTG_SIMD_SUM(w)
        for (int64_t c = c0; c < C; c += Lanes::kStride) {
          const acc_t diff =
              ((static_cast<acc_t>(zs[c]) - ms) - (static_cast<acc_t>(zt[c]) - mt)) * inv_t;
          w += es[c] > acc_t(0) ? es[c] * diff : acc_t(0);
          acc[c] += sq * et[c] - sp * es[c];
        }
        w = lanes.sum(w);
        loss = w * inv_ss - ktg_log(ss) + log_st;
      } else {
        // Cosine of the two distributions (the softmax normalisers cancel);
        // d cos / d z_t = (1/T) (e_t e_s / sqrt(ns nt) - cos e_t^2 / nt).
        acc_t dot = 0, ns = 0, nt = 0;
        KTG_SIMD_SUM(dot, ns, nt)
        for (int64_t c = c0; c < C; c += Lanes::kStride) {
          dot += es[c] * et[c];
          ns += es[c] * es[c];
          nt += et[c] * et[c];
        }
        dot = lanes.sum(dot);
        ns = lanes.sum(ns);
        nt = lanes.sum(nt);
        const acc_t inv_norms = acc_t(1) / ktg_sqrt(ns * nt);
        const acc_t cos = dot * inv_norms;
        loss = cos;
        const acc_t a = scale * inv_norms, b = scale * cos / nt;
        for (int64_t c = c0; c < C; c += Lanes::kStride) acc[c] += et[c] * (a * es[c] - b * et[c]);
      }
    }
    if (P.row_loss) P.row_loss[e * B + n] = g * loss;
  }

  // Convert into the gradient unless we accumulated in it directly.
  scalar_t* out = P.grad + r * C;
  if (static_cast<void*>(out) != static_cast<void*>(acc)) {
    for (int64_t c = c0; c < C; c += Lanes::kStride) out[c] = static_cast<scalar_t>(acc[c]);
  }
}

}  // namespace ktgfast
