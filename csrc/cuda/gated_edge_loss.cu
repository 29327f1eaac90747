// CUDA kernels of ktgfast::gated_edge_loss and its backward.
//
// Thin by design: one warp per row runs the shared math of
// common/gated_edge_loss.h (which the CPU tests execute line for line): phase 1
// the per-slot softmax statistics, phase 2 every edge of a destination row; a
// single-block kernel reduces the (E, B) per-sample buffers in a fixed order.
// Three launches for any number of edges, on the current stream, no host sync.
// (Only c10 CUDA headers: ATen/cuda/CUDAContext.h drags in cuSPARSE/cuBLAS
// headers that a bare toolkit may lack.)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/gated_edge_loss.h"
#include "../common/gated_edge_loss_host.h"
#include "edge_reduce.cuh"
#include "warp_lanes.cuh"

namespace ktgfast {
namespace {

// Phase 1: per-slot statistics; one warp per row.
template <typename scalar_t, typename acc_t>
__global__ void slot_stats_kernel(const EdgeLossProblem<scalar_t, acc_t> P) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (r >= P.M * P.B) return;  // whole warps leave together, shuffles stay converged
  slot_stats_row<acc_t>(WarpLanes{static_cast<int>(threadIdx.x % kWarp)}, P, r);
}

// Phase 2: every incoming edge of one destination row; one warp per row.
// workspace = [et | es | acc] planes of (rows, C); the gradient itself is the
// accumulator when its dtype is the accumulation dtype.
template <typename scalar_t, typename acc_t>
__global__ void edge_rows_kernel(const EdgeLossProblem<scalar_t, acc_t> P, acc_t* workspace,
                                 bool in_place) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t rows = P.M * P.B, C = P.C;
  if (r >= rows) return;
  RowScratch<acc_t> scratch{
      in_place ? reinterpret_cast<acc_t*>(P.grad + r * C) : workspace + (2 * rows + r) * C,
      workspace + r * C, workspace + (rows + r) * C};
  edge_loss_row<acc_t>(WarpLanes{static_cast<int>(threadIdx.x % kWarp)}, P, r, scratch);
}

template <typename scalar_t>
void launch_rows(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& edge_index,
                 const at::Tensor& edge_params, const at::Tensor& progress, int64_t reduction,
                 const at::Tensor* weights, at::Tensor* row_loss, at::Tensor* row_gate,
                 at::Tensor& grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = logits.size(0), B = logits.size(1), C = logits.size(2);
  const int64_t rows = M * B;
  if (rows == 0) return;
  constexpr bool in_place = std::is_same<scalar_t, acc_t>::value;
  const auto fopt = logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor workspace = at::empty({in_place ? 3 : 4, rows, C}, fopt);  // e1, et, es[, acc]
  at::Tensor stats = at::empty({rows, 2}, fopt);
  at::Tensor argmax = at::empty({rows}, logits.options().dtype(at::kLong));
  acc_t* ws = workspace.mutable_data_ptr<acc_t>();
  const auto P = make_problem<scalar_t, acc_t>(logits, labels, edge_index, edge_params, progress,
                                               reduction, weights, row_loss, row_gate, ws, stats,
                                               argmax, grad);
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  auto stream = c10::cuda::getCurrentCUDAStream();
  slot_stats_kernel<scalar_t, acc_t><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(P);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  edge_rows_kernel<scalar_t, acc_t><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(
      P, ws + rows * C, in_place);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gated_edge_loss_cuda(
    const at::Tensor& logits_in, const at::Tensor& labels_in, const at::Tensor& edge_index_in,
    const at::Tensor& edge_params_in, const at::Tensor& progress, int64_t reduction) {
  check_inputs(logits_in, labels_in, edge_index_in, edge_params_in, progress, reduction);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const auto in = prepare_inputs(logits_in, labels_in, edge_index_in, edge_params_in);
  const int64_t M = in.logits.size(0), B = in.logits.size(1), E = in.edge_index.size(0);
  auto out = allocate_outputs(in.logits, E);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.logits.scalar_type(),
                                  "gated_edge_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_rows<scalar_t>(in.logits, in.labels, in.edge_index, in.edge_params, progress,
                          reduction, nullptr, &out.row_loss, &out.row_gate, out.grad);
    const acc_t div = reduction == kReduceMean ? static_cast<acc_t>(B) : acc_t(1);
    edge_reduce_kernel<acc_t><<<1, kReduceThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        out.row_loss.const_data_ptr<acc_t>(), out.row_gate.const_data_ptr<acc_t>(),
        in.edge_index.const_data_ptr<int32_t>(), in.edge_params.const_data_ptr<double>(), E, B, M,
        div, out.edge_loss.mutable_data_ptr<acc_t>(), out.node_loss.mutable_data_ptr<acc_t>(),
        out.count.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.edge_loss, out.node_loss, out.count, out.grad};
}

at::Tensor gated_edge_loss_backward_cuda(const at::Tensor& grad_edge, const at::Tensor& logits_in,
                                         const at::Tensor& labels_in,
                                         const at::Tensor& edge_index_in,
                                         const at::Tensor& edge_params_in,
                                         const at::Tensor& progress, int64_t reduction) {
  check_inputs(logits_in, labels_in, edge_index_in, edge_params_in, progress, reduction);
  check_grad_edge(grad_edge, edge_index_in.size(0));
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const auto in = prepare_inputs(logits_in, labels_in, edge_index_in, edge_params_in);
  const auto weights = grad_edge.to(loss_dtype(in.logits.scalar_type())).contiguous();
  auto grad = at::empty(in.logits.sizes(), in.logits.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.logits.scalar_type(),
                                  "gated_edge_loss_backward_cuda", [&] {
    launch_rows<scalar_t>(in.logits, in.labels, in.edge_index, in.edge_params, progress,
                          reduction, &weights, nullptr, nullptr, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ktgfast, CUDA, m) {
  m.impl("gated_edge_loss", &gated_edge_loss_cuda);
  m.impl("gated_edge_loss_backward", &gated_edge_loss_backward_cuda);
}

}  // namespace ktgfast
