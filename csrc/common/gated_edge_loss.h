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

#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define KTG_SIMD_SUM(...)
#else
#define KTG_PRAGMA(x) _Pragma(#x)
#define KTG_SIMD_SUM(...) KTG_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#endif

namespace ktgfast {

// Edge-table encoding.  Keep in sync with ktgfast/ops.py (LOSS_KINDS, GATE_KINDS).
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
  const float hi = 88.3762626647949f, lo = -87.3365478515625f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float fx = std::floor(xc * 1.44269504088896341f + 0.5f);
  // Cody-Waite range reduction: r = xc - fx * ln2, in two parts for accuracy.
  float r = xc - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = static_cast<int32_t>(fx) + 127;
  int32_t bits = n << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;
  return x < lo ? 0.0f : (x > hi ? INFINITY : y);
#endif
}

// ---------------------------------------------------------------------------
// Per-sample gate weight (eqs. 3.4-3.8, 5.6-5.8).
template <typename acc_t>
KTG_HD acc_t gate_weight(int32_t gate, acc_t a, acc_t b, acc_t progress,
                         bool label_source, bool src_correct, acc_t src_maxprob) {
  switch (gate) {
    case kGateThrough: return acc_t(1);
    case kGateLinear: return progress;
    case kGateNegLinear: return acc_t(1) - progress;
    case kGateCorrect: return (label_source || src_correct) ? acc_t(1) : acc_t(0);
    case kGateSine: {
      const acc_t two_pi = acc_t(6.283185307179586476925286766559);
      return acc_t(0.5) + acc_t(0.5) * ktg_sin(two_pi * a * progress + b);
    }
    case kGateThreshold: return (label_source || src_maxprob > a) ? acc_t(1) : acc_t(0);
    default: return acc_t(0);  // Cutoff (and anything unknown) carries nothing.
  }
}

// ---------------------------------------------------------------------------
// Lane policies.  Serial: one lane, stride 1.  The CUDA warp policy lives in the
// .cu file (it needs __shfl_xor_sync).
struct SerialLanes {
  static constexpr int kStride = 1;
  KTG_HD int lane() const { return 0; }
  template <typename T>
  KTG_HD T sum(T v) const { return v; }
  // (value, index) arg-max across lanes; ties resolve to the smallest index.
  template <typename T>
  KTG_HD void argmax(T&, int64_t&) const {}
};

// Row maximum and first arg-max over the lane's classes, then across lanes.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void row_max(const Lanes& lanes, const scalar_t* z, int64_t C, acc_t& m,
                    int64_t& arg) {
  acc_t best = -INFINITY;
  int64_t best_i = C;  // C means "none" (an all -inf or NaN row)
  for (int64_t c = lanes.lane(); c < C; c += Lanes::kStride) {
    const acc_t v = static_cast<acc_t>(z[c]);
    if (v > best) {
      best = v;
      best_i = c;
    }
  }
  lanes.argmax(best, best_i);
  m = best;
  arg = best_i < C ? best_i : 0;
}

// sum_c exp((z_c - m) / T)
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD acc_t row_sumexp(const Lanes& lanes, const scalar_t* z, int64_t C, acc_t m,
                        acc_t inv_t) {
  acc_t s = 0;
  const int64_t c0 = lanes.lane();
  KTG_SIMD_SUM(s)
  for (int64_t c = c0; c < C; c += Lanes::kStride) {
    s += ktg_exp<acc_t>((static_cast<acc_t>(z[c]) - m) * inv_t);
  }
  return lanes.sum(s);
}

// Everything one destination row needs to know about one incoming edge.
template <typename acc_t>
struct EdgeRowStats {
  acc_t loss = 0;   // per-sample loss a(n), before gate and coefficient
  acc_t gate = 0;   // per-sample gate weight g(n)
  int64_t target = 0;   // class index for CE / PL
  acc_t src_m = 0, src_log_s = 0;  // source shift and log-normaliser at T
  acc_t cos = 0, cos_inv_norms = 0, cos_inv_nt = 0;  // cosine pieces
};

// Destination-row statistics cached across incoming edges of equal temperature.
template <typename acc_t>
struct DestStats {
  acc_t m = 0;               // max of z_t
  acc_t inv_t = -1;          // temperature the cached normaliser belongs to
  acc_t log_s = 0;           // log sum exp((z_t - m) / T)
};

// The whole row.  `weights` (per-edge upstream gradient, may be null = 1)
// scales the gradient; `row_loss`, `row_gate` ((E, B), may be null) receive the
// gated per-sample loss and the gate weight; `acc` (C, acc_t) receives
// sum_e d(L_e)/d(z_t) for this row; `grad_out` (C) gets acc converted.
template <typename acc_t, typename scalar_t, typename Lanes>
KTG_HD void edge_loss_row(const Lanes& lanes, const scalar_t* logits, int64_t stride_m,
                          int64_t stride_b, int64_t C, int64_t B, int64_t n, int32_t t,
                          const int64_t* labels, const int32_t* edge_index,
                          const double* edge_params, int64_t E, acc_t progress,
                          acc_t batch_div, const acc_t* weights, acc_t* row_loss,
                          acc_t* row_gate, acc_t* acc, scalar_t* grad_out) {
  const scalar_t* zt = logits + t * stride_m + n * stride_b;
  for (int64_t c = lanes.lane(); c < C; c += Lanes::kStride) acc[c] = acc_t(0);

  DestStats<acc_t> dst;
  int64_t dst_arg;
  row_max<acc_t>(lanes, zt, C, dst.m, dst_arg);

  for (int64_t e = 0; e < E; ++e) {
    const int32_t* ei = edge_index + e * kEdgeIndexCols;
    if (ei[kColDst] != t || ei[kColGate] == kGateCutoff) continue;
    const double* ep = edge_params + e * kEdgeParamCols;
    const int32_t src = ei[kColSrc], kind = ei[kColLoss], gate = ei[kColGate];
    const acc_t inv_t = acc_t(1) / static_cast<acc_t>(ep[kColTemp]);
    const acc_t upstream = weights ? weights[e] : acc_t(1);
    const bool label_source = src == kLabelSource;
    const int64_t y = labels[n];

    // Destination normaliser at this edge's temperature (cached by T).
    if (inv_t != dst.inv_t) {
      dst.inv_t = inv_t;
      dst.log_s = ktg_log(row_sumexp<acc_t>(lanes, zt, C, dst.m, inv_t));
    }

    EdgeRowStats<acc_t> st;
    const scalar_t* zs = label_source ? nullptr : logits + src * stride_m + n * stride_b;
    acc_t src_maxprob = 1;
    bool src_correct = true;
    if (!label_source) {
      int64_t arg;
      row_max<acc_t>(lanes, zs, C, st.src_m, arg);
      src_correct = arg == y;
      st.target = arg;
      if (gate == kGateThreshold) {
        src_maxprob = acc_t(1) / row_sumexp<acc_t>(lanes, zs, C, st.src_m, acc_t(1));
      }
    }
    st.gate = gate_weight<acc_t>(gate, static_cast<acc_t>(ep[kColGateA]),
                                 static_cast<acc_t>(ep[kColGateB]), progress,
                                 label_source, src_correct, src_maxprob);
    if (row_gate) row_gate[e * B + n] = st.gate;
    // A closed gate contributes nothing: skipping also avoids 0 * inf.
    if (st.gate == acc_t(0)) {
      if (row_loss) row_loss[e * B + n] = 0;
      continue;
    }

    const bool to_label = label_source || kind == kLossCE;
    if (to_label || kind == kLossPL) {
      // Cross-entropy at T: log S_t - (z_t[y] - m_t) / T.
      st.target = to_label ? y : st.target;
#if defined(__CUDA_ARCH__)
      CUDA_KERNEL_ASSERT(st.target >= 0 && st.target < C && "gated_edge_loss: label out of range");
#endif
      st.loss = dst.log_s - (static_cast<acc_t>(zt[st.target]) - dst.m) * inv_t;
    } else if (kind == kLossKL) {
      // KL = sum_c p_c ((zs_c - ms) - (zt_c - mt)) / T - log S_s + log S_t,
      // with the shifted logits so that large logits do not cancel.
      acc_t s = 0, w = 0;
      const int64_t c0 = lanes.lane();
      KTG_SIMD_SUM(s, w)
      for (int64_t c = c0; c < C; c += Lanes::kStride) {
        const acc_t ds = static_cast<acc_t>(zs[c]) - st.src_m;
        const acc_t ex = ktg_exp<acc_t>(ds * inv_t);
        const acc_t diff = (ds - (static_cast<acc_t>(zt[c]) - dst.m)) * inv_t;
        s += ex;
        w += ex > acc_t(0) ? ex * diff : acc_t(0);  // 0 * log 0 = 0
      }
      s = lanes.sum(s);
      w = lanes.sum(w);
      st.src_log_s = ktg_log(s);
      st.loss = w / s - st.src_log_s + dst.log_s;
    } else {
      // Cosine of the two distributions; the softmax normalisers cancel.
      acc_t dot = 0, ns = 0, nt = 0;
      const int64_t c0 = lanes.lane();
      KTG_SIMD_SUM(dot, ns, nt)
      for (int64_t c = c0; c < C; c += Lanes::kStride) {
        const acc_t es = ktg_exp<acc_t>((static_cast<acc_t>(zs[c]) - st.src_m) * inv_t);
        const acc_t et = ktg_exp<acc_t>((static_cast<acc_t>(zt[c]) - dst.m) * inv_t);
        dot += es * et;
        ns += es * es;
        nt += et * et;
      }
      dot = lanes.sum(dot);
      ns = lanes.sum(ns);
      nt = lanes.sum(nt);
      st.cos_inv_norms = acc_t(1) / ktg_sqrt(ns * nt);
      st.cos_inv_nt = acc_t(1) / nt;
      st.cos = dot * st.cos_inv_norms;
      st.loss = st.cos;
    }
    if (row_loss) row_loss[e * B + n] = st.gate * st.loss;

    // Gradient of coef * g * a / batch_div w.r.t. z_t, in closed form per class.
    const acc_t scale = static_cast<acc_t>(ep[kColCoef]) * st.gate * upstream * inv_t / batch_div;
    const int64_t c0 = lanes.lane();
    if (to_label || kind == kLossPL) {
      for (int64_t c = c0; c < C; c += Lanes::kStride) {
        const acc_t q = ktg_exp<acc_t>((static_cast<acc_t>(zt[c]) - dst.m) * inv_t - dst.log_s);
        acc[c] += scale * (c == st.target ? q - acc_t(1) : q);
      }
    } else if (kind == kLossKL) {
      for (int64_t c = c0; c < C; c += Lanes::kStride) {
        const acc_t q = ktg_exp<acc_t>((static_cast<acc_t>(zt[c]) - dst.m) * inv_t - dst.log_s);
        const acc_t p =
            ktg_exp<acc_t>((static_cast<acc_t>(zs[c]) - st.src_m) * inv_t - st.src_log_s);
        acc[c] += scale * (q - p);
      }
    } else {
      // d cos / d z_t = (1/T) (e_t e_s / sqrt(ns nt) - cos e_t^2 / nt)
      for (int64_t c = c0; c < C; c += Lanes::kStride) {
        const acc_t es = ktg_exp<acc_t>((static_cast<acc_t>(zs[c]) - st.src_m) * inv_t);
        const acc_t et = ktg_exp<acc_t>((static_cast<acc_t>(zt[c]) - dst.m) * inv_t);
        acc[c] += scale * (et * es * st.cos_inv_norms - st.cos * et * et * st.cos_inv_nt);
      }
    }
  }

  if (grad_out) {
    for (int64_t c = lanes.lane(); c < C; c += Lanes::kStride) {
      grad_out[c] = static_cast<scalar_t>(acc[c]);
    }
  }
}

}  // namespace ktgfast
