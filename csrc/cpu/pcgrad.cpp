// CPU kernel of ktgfast::pcgrad: Gram pass, coefficient recurrence, combine pass
// (see common/pcgrad.h).
//
// Both passes split the data into fixed chunks of kChunk elements per tensor
// (independent of the thread count) and run chunks in parallel.  The Gram pass
// writes one partial sum per (chunk, pair) that is reduced afterwards in chunk
// order, so results are bitwise identical for any number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/pcgrad.h"
#include "../common/pcgrad_host.h"

namespace ktgfast {
namespace pcgrad {
namespace {

// K rows of 4096 float32 (80 KiB at K = 5) stay in L2 while every pair of
// rows is dotted.
constexpr int64_t kChunk = 4096;
// Independent partial sums per dot (AVX2: 4 vectors of 4 doubles).
constexpr int kDotAcc = 16;

// One clone per CPU level, picked at load time (ifunc): AVX2 + FMA doubles the
// throughput of the double-precision dots over the SSE2 baseline.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define KTG_PCG_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KTG_PCG_CPU_CLONES
#endif

template <typename scalar_t>
inline void gram_chunks_impl(const TensorRef* refs, const Chunk* chunks, int64_t K,
                             int64_t begin, int64_t end, double* partials) {
  const int64_t np = num_pairs(K);
  for (int64_t c = begin; c < end; ++c) {
    const Chunk ch = chunks[c];
    const TensorRef ref = refs[ch.tensor];
    const scalar_t* base = reinterpret_cast<const scalar_t*>(ref.in) + ch.start;
    double* out = partials + c * np;
    int64_t p = 0;
    for (int64_t a = 0; a < K; ++a) {
      for (int64_t b = a; b < K; ++b, ++p) {
        out[p] = chunk_dot<kDotAcc>(base + a * ref.row_stride, base + b * ref.row_stride, 0,
                                    ch.len, 1);
      }
    }
  }
}

template <typename scalar_t>
inline void combine_chunks_impl(const TensorRef* refs, const Chunk* chunks, int64_t K,
                                const at::opmath_type<scalar_t>* weights, int64_t begin,
                                int64_t end, at::opmath_type<scalar_t>* acc) {
  for (int64_t c = begin; c < end; ++c) {
    const Chunk ch = chunks[c];
    const TensorRef ref = refs[ch.tensor];
    const scalar_t* base = reinterpret_cast<const scalar_t*>(ref.in) + ch.start;
    for (int64_t l = 0; l < K; ++l) axpy(acc, weights[l], base + l * ref.row_stride, ch.len, l == 0);
    scalar_t* out = reinterpret_cast<scalar_t*>(ref.out) + ch.start;
    for (int64_t n = 0; n < ch.len; ++n) out[n] = static_cast<scalar_t>(acc[n]);
  }
}

#define KTG_PCG_DEFINE_CHUNKS(T)                                                              \
  KTG_PCG_CPU_CLONES void gram_chunks(const TensorRef* refs, const Chunk* chunks, int64_t K,  \
                                      int64_t begin, int64_t end, double* partials, T*) {     \
    gram_chunks_impl<T>(refs, chunks, K, begin, end, partials);                               \
  }                                                                                           \
  KTG_PCG_CPU_CLONES void combine_chunks(const TensorRef* refs, const Chunk* chunks,          \
                                         int64_t K, const at::opmath_type<T>* weights,        \
                                         int64_t begin, int64_t end, at::opmath_type<T>* acc, \
                                         T*) {                                                \
    combine_chunks_impl<T>(refs, chunks, K, weights, begin, end, acc);                        \
  }
KTG_PCG_DEFINE_CHUNKS(float)
KTG_PCG_DEFINE_CHUNKS(double)
KTG_PCG_DEFINE_CHUNKS(c10::Half)
KTG_PCG_DEFINE_CHUNKS(c10::BFloat16)
#undef KTG_PCG_DEFINE_CHUNKS

std::tuple<std::vector<at::Tensor>, at::Tensor> pcgrad_cpu(at::TensorList grads,
                                                           const at::Tensor& order_in,
                                                           int64_t reduction) {
  check_inputs(grads, order_in, reduction);
  check_order_values_cpu(order_in);
  const at::Tensor order = order_in.contiguous();
  Work work = make_work(grads, kChunk, /*pinned=*/false);
  const int64_t K = work.K, np = num_pairs(K), C = work.num_chunks;
  const int64_t* table = work.table.const_data_ptr<int64_t>();
  const auto* refs = reinterpret_cast<const TensorRef*>(table);
  const auto* chunks = reinterpret_cast<const Chunk*>(table + 4 * work.num_tensors);
  at::Tensor conflicts = at::empty({K, K}, order.options());
  // A few chunks per task: big enough to amortise the scheduling, small enough
  // to balance a ResNet's mix of large and tiny parameter tensors.
  const int64_t grain = 8;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.rows[0].scalar_type(),
                                  "pcgrad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // 1. Gram matrix: per-chunk partials, reduced in chunk order.
    std::vector<double> partials(C * np);
    at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
      gram_chunks(refs, chunks, K, begin, end, partials.data(), static_cast<scalar_t*>(nullptr));
    });
    std::vector<double> G(K * K, 0.0);
    for (int64_t c = 0; c < C; ++c) {
      int64_t p = 0;
      for (int64_t a = 0; a < K; ++a) {
        for (int64_t b = a; b < K; ++b, ++p) G[a * K + b] += partials[c * np + p];
      }
    }
    for (int64_t a = 0; a < K; ++a) {
      for (int64_t b = 0; b < a; ++b) G[a * K + b] = G[b * K + a];
    }
    // 2. The recurrence on the coefficients.
    std::vector<double> row(K), weights(K);
    pcgrad_weights(G.data(), order.const_data_ptr<int64_t>(), K, reduction, row.data(),
                   weights.data(), conflicts.mutable_data_ptr<int64_t>());
    // 3. update = sum_l w_l g_l.
    std::vector<acc_t> w(weights.begin(), weights.end());
    at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(kChunk);  // one chunk's sums, in the accumulation dtype
      combine_chunks(refs, chunks, K, w.data(), begin, end, acc.data(),
                     static_cast<scalar_t*>(nullptr));
    });
  });
  return {work.outs, conflicts};
}

}  // namespace
}  // namespace pcgrad

TORCH_LIBRARY_IMPL(ktgfast, CPU, m) { m.impl("pcgrad", &pcgrad::pcgrad_cpu); }

}  // namespace ktgfast
