// CUDA kernels of ktgfast::pcgrad, multi-tensor style: one launch covers every
// parameter tensor (a table of tensors and fixed chunks, uploaded once from
// pinned memory, as NVIDIA apex's multi_tensor_apply does with its argument
// lists).  Three launches for any number of tensors and tasks, on the current
// stream, no host sync:
//   gram_partials_kernel  one block per chunk: the chunk's K(K+1)/2 pair dots,
//                         block-reduced in a fixed tree, to (chunks, pairs);
//   weights_kernel        one block: partials reduced in chunk order into G,
//                         then one thread runs the K^3 recurrence (the same
//                         pcgrad_weights the CPU runs);
//   combine_kernel        one block per chunk: update = sum_l w_l g_l.
// Fixed chunks and reduction trees make the result deterministic.  (Only c10
// CUDA headers: ATen/cuda/CUDAContext.h drags in headers a bare toolkit lacks.)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/pcgrad.h"
#include "../common/pcgrad_host.h"

namespace ktgfast {
namespace pcgrad {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8192;  // 32 elements per thread and pair
constexpr int64_t kMaxTasks = 4096;  // combine_kernel keeps the K weights in shared memory

// Sum of v over the block (blockDim.x == kThreads), fixed tree; every thread
// gets the result.  `red` is kThreads doubles of shared memory.
__device__ double block_sum(double v, double* red) {
  const int tid = threadIdx.x;
  red[tid] = v;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    __syncthreads();
  }
  const double s = red[0];
  __syncthreads();  // red is reused by the next call
  return s;
}

template <typename scalar_t>
__global__ void gram_partials_kernel(const TensorRef* __restrict__ refs,
                                     const Chunk* __restrict__ chunks, int64_t K,
                                     double* __restrict__ partials) {
  __shared__ double red[kThreads];
  const Chunk ch = chunks[blockIdx.x];
  const TensorRef ref = refs[ch.tensor];
  const scalar_t* base = reinterpret_cast<const scalar_t*>(ref.in) + ch.start;
  const int64_t np = num_pairs(K);
  for (int64_t p = 0; p < np; ++p) {
    int64_t a, b;
    pair_rows(p, K, a, b);
    const double s = block_sum(chunk_dot<1>(base + a * ref.row_stride, base + b * ref.row_stride,
                                            threadIdx.x, ch.len, kThreads),
                               red);
    if (threadIdx.x == 0) partials[blockIdx.x * np + p] = s;
  }
}

// ws = [G (K*K) | row (K) | weights (K)], all double.
__global__ void weights_kernel(const double* __restrict__ partials, int64_t num_chunks,
                               const int64_t* __restrict__ order, int64_t K, int64_t reduction,
                               double* ws, int64_t* conflicts) {
  __shared__ double red[kThreads];
  double* G = ws;
  const int64_t np = num_pairs(K);
  for (int64_t p = 0; p < np; ++p) {
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < num_chunks; c += kThreads) s += partials[c * np + p];
    s = block_sum(s, red);
    if (threadIdx.x == 0) {
      int64_t a, b;
      pair_rows(p, K, a, b);
      G[a * K + b] = s;
      G[b * K + a] = s;
    }
  }
  if (threadIdx.x == 0) pcgrad_weights(G, order, K, reduction, ws + K * K, ws + K * K + K, conflicts);
}

template <typename scalar_t>
__global__ void combine_kernel(const TensorRef* __restrict__ refs,
                               const Chunk* __restrict__ chunks, int64_t K,
                               const double* __restrict__ weights) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  acc_t* w = reinterpret_cast<acc_t*>(smem);
  for (int64_t l = threadIdx.x; l < K; l += kThreads) w[l] = static_cast<acc_t>(weights[l]);
  __syncthreads();
  const Chunk ch = chunks[blockIdx.x];
  const TensorRef ref = refs[ch.tensor];
  const scalar_t* in = reinterpret_cast<const scalar_t*>(ref.in) + ch.start;
  scalar_t* out = reinterpret_cast<scalar_t*>(ref.out) + ch.start;
  combine_rows<acc_t>(in, ref.row_stride, K, w, out, threadIdx.x, ch.len, kThreads);
}

std::tuple<std::vector<at::Tensor>, at::Tensor> pcgrad_cuda(at::TensorList grads,
                                                            const at::Tensor& order_in,
                                                            int64_t reduction) {
  check_inputs(grads, order_in, reduction);
  TORCH_CHECK(grads[0].size(0) <= kMaxTasks, "pcgrad: the CUDA kernel takes at most ", kMaxTasks,
              " gradients, got K = ", grads[0].size(0));
  const c10::cuda::CUDAGuard guard(grads[0].device());
  const at::Tensor order = order_in.contiguous();
  Work work = make_work(grads, kChunk, /*pinned=*/true);
  const int64_t K = work.K, np = num_pairs(K), C = work.num_chunks;
  // Pinned source: an asynchronous copy on the current stream; the caching
  // host allocator keeps the block alive until the copy has run.
  const at::Tensor table = work.table.to(grads[0].device(), /*non_blocking=*/true);
  const int64_t* tab = table.const_data_ptr<int64_t>();
  const auto* refs = reinterpret_cast<const TensorRef*>(tab);
  const auto* chunks = reinterpret_cast<const Chunk*>(tab + 4 * work.num_tensors);
  const auto dopt = grads[0].options().dtype(at::kDouble);
  at::Tensor partials = at::empty({std::max<int64_t>(C * np, 1)}, dopt);
  at::Tensor ws = at::empty({K * K + 2 * K}, dopt);
  at::Tensor conflicts = at::empty({K, K}, order.options());
  auto stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.rows[0].scalar_type(),
                                  "pcgrad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    double* part = partials.mutable_data_ptr<double>();
    double* wsp = ws.mutable_data_ptr<double>();
    if (C > 0) {
      gram_partials_kernel<scalar_t><<<static_cast<unsigned>(C), kThreads, 0, stream>>>(refs, chunks, K, part);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    weights_kernel<<<1, kThreads, 0, stream>>>(part, C, order.const_data_ptr<int64_t>(), K,
                                               reduction, wsp,
                                               conflicts.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (C > 0) {
      combine_kernel<scalar_t><<<static_cast<unsigned>(C), kThreads, K * sizeof(acc_t), stream>>>(refs, chunks, K,
                                                                          wsp + K * K + K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {work.outs, conflicts};
}

}  // namespace
}  // namespace pcgrad

TORCH_LIBRARY_IMPL(ktgfast, CUDA, m) { m.impl("pcgrad", &pcgrad::pcgrad_cuda); }

}  // namespace ktgfast
