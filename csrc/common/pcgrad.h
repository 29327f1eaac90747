// Math of PCGrad (Yu et al. 2020, Alg. 1), shared by the CPU and CUDA kernels.
//
// Every projected gradient is a linear combination of the originals,
// g_i' = sum_l A[i,l] g_l, and every dot product the algorithm needs is one of
// the Gram matrix G = g g^T.  So the op is three steps, each exact in exact
// arithmetic:
//   1. one pass over the (K, P) data: G, accumulated in double (gram pairs of
//      one chunk: chunk_dot);
//   2. the K x K x K recurrence of Alg. 1 on the coefficients (pcgrad_weights);
//   3. one pass writing update = sum_l w_l g_l with w_l = sum_i A[i,l]
//      (divided by K for the mean): combine_rows / axpy.
// The per-pair formulation instead needs ~K^2 passes and a host sync per `if`.
//
// Loops over elements are written `for (n = first; n < end; n += step)`: the
// CPU calls them with first = 0, step = 1 (inlined, vectorised), the CUDA
// kernels with first = threadIdx.x, step = blockDim.x.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KTG_PCG_HD __host__ __device__ __forceinline__
#else
#define KTG_PCG_HD inline
#endif

namespace ktgfast {
namespace pcgrad {

// Keep in sync with ktgfast/ops/pcgrad.py (PCGRAD_REDUCTIONS).
enum Reduction : int64_t { kSum = 0, kMean = 1 };

// One parameter tensor as the kernels read it: K rows of `numel` elements with
// unit element stride, row r at in + r * row_stride; its update goes to `out`
// (numel elements, contiguous).  Pointers travel as int64 in a table tensor.
struct TensorRef {
  int64_t in;          // const scalar_t*
  int64_t row_stride;  // elements
  int64_t out;         // scalar_t*
  int64_t numel;
};

// A fixed slice [start, start + len) of one tensor: the unit of work.  The
// chunking depends only on the shapes, never on the thread count, so partial
// sums per chunk reduced in chunk order are deterministic.
struct Chunk {
  int64_t tensor;
  int64_t start;
  int64_t len;
};

static_assert(sizeof(TensorRef) == 4 * sizeof(int64_t), "TensorRef is a row of 4 int64");
static_assert(sizeof(Chunk) == 3 * sizeof(int64_t), "Chunk is a row of 3 int64");

// Number of (a, b) pairs with a <= b: the upper triangle of the Gram matrix.
KTG_PCG_HD int64_t num_pairs(int64_t K) { return K * (K + 1) / 2; }

// The pair of index p, in the order (0,0), (0,1), ..., (0,K-1), (1,1), ...
KTG_PCG_HD void pair_rows(int64_t p, int64_t K, int64_t& a, int64_t& b) {
  a = 0;
  while (p >= K - a) {
    p -= K - a;
    ++a;
  }
  b = a + p;
}

template <typename T>
KTG_PCG_HD double to_double(T x) {
  return static_cast<double>(static_cast<float>(x));  // half / bfloat16 / float
}
template <>
KTG_PCG_HD double to_double<double>(double x) {
  return x;
}

// sum_n x[n] * y[n] over n = first, first + step, ... < end, in double.  kAcc
// independent partial sums (combined in a fixed order) break the FMA latency
// chain, so the CPU's unrolled inner loop vectorises into several accumulators;
// the GPU uses kAcc = 1 per thread.
template <int kAcc, typename T>
KTG_PCG_HD double chunk_dot(const T* __restrict__ x, const T* __restrict__ y, int64_t first,
                            int64_t end, int64_t step) {
  double s[kAcc];
  for (int l = 0; l < kAcc; ++l) s[l] = 0.0;
  int64_t n = first;
  for (; n + (kAcc - 1) * step < end; n += kAcc * step) {
    for (int l = 0; l < kAcc; ++l) s[l] += to_double(x[n + l * step]) * to_double(y[n + l * step]);
  }
  for (int l = 0; n < end; n += step, ++l) s[l] += to_double(x[n]) * to_double(y[n]);
  for (int w = kAcc / 2; w > 0; w /= 2) {  // pairwise, fixed order (kAcc a power of 2)
    for (int l = 0; l < w; ++l) s[l] += s[l + w];
  }
  return s[0];
}

// acc[n] (+)= w * x[n] for n in [0, len): the CPU's row-by-row combine.
template <typename acc_t, typename T>
KTG_PCG_HD void axpy(acc_t* __restrict__ acc, acc_t w, const T* __restrict__ x, int64_t len,
                     bool first_row) {
  if (first_row) {
    for (int64_t n = 0; n < len; ++n) acc[n] = w * static_cast<acc_t>(x[n]);
  } else {
    for (int64_t n = 0; n < len; ++n) acc[n] += w * static_cast<acc_t>(x[n]);
  }
}

// out[n] = sum_l w[l] * x[l * row_stride + n] for n = first, first + step, ...
// < end: the GPU's element-wise combine (rows in the same order as axpy's).
template <typename acc_t, typename T>
KTG_PCG_HD void combine_rows(const T* __restrict__ x, int64_t row_stride, int64_t K,
                             const acc_t* __restrict__ w, T* __restrict__ out, int64_t first,
                             int64_t end, int64_t step) {
  for (int64_t n = first; n < end; n += step) {
    acc_t s = w[0] * static_cast<acc_t>(x[n]);
    for (int64_t l = 1; l < K; ++l) s += w[l] * static_cast<acc_t>(x[l * row_stride + n]);
    out[n] = static_cast<T>(s);
  }
}

// Step 2: Alg. 1 on the coefficients.  G: the (K, K) Gram matrix (row-major,
// symmetric); order: (K, K-1), row i the other tasks in visiting order; row: K
// doubles of scratch.  For task i, A[i] starts as e_i; for each j in order[i],
// dot = g_i' . g_j = sum_l A[i,l] G[l,j] (against the ORIGINAL g_j); if
// dot < 0 (and ||g_j||^2 > 0, else dot is 0 anyway) subtract dot / G[j,j] e_j.
// Writes weights[l] = sum_i A[i,l] (/ K for the mean) and conflicts[i,j] =
// 1[G[i,j] < 0] for i != j (the original gradients).  Entries of order outside
// [0, K) or equal to i are skipped (the callers validate order beforehand).
KTG_PCG_HD void pcgrad_weights(const double* G, const int64_t* order, int64_t K,
                               int64_t reduction, double* row, double* weights,
                               int64_t* conflicts) {
  for (int64_t l = 0; l < K; ++l) weights[l] = 0.0;
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t l = 0; l < K; ++l) row[l] = l == i ? 1.0 : 0.0;
    for (int64_t t = 0; t + 1 < K; ++t) {
      const int64_t j = order[i * (K - 1) + t];
      if (j < 0 || j >= K || j == i) continue;
      double dot = 0.0;
      for (int64_t l = 0; l < K; ++l) dot += row[l] * G[l * K + j];
      const double gjj = G[j * K + j];
      if (dot < 0.0 && gjj > 0.0) row[j] -= dot / gjj;
    }
    for (int64_t l = 0; l < K; ++l) weights[l] += row[l];
  }
  if (reduction == kMean) {
    for (int64_t l = 0; l < K; ++l) weights[l] /= static_cast<double>(K);
  }
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = 0; j < K; ++j) conflicts[i * K + j] = (i != j && G[i * K + j] < 0.0) ? 1 : 0;
  }
}

}  // namespace pcgrad
}  // namespace ktgfast
