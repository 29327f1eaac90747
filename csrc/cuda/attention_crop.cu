// CUDA kernels of ktgfast::attention_crop_loss and its backward.
//
// Thin by design: one warp per row runs the shared math of
// common/attention_crop.h (which the CPU tests execute line for line): phase 1
// the per-slot map peaks and gate statistics, phase 2 every edge of a
// destination row; a single-block kernel reduces the (E, B) per-sample buffers
// in a fixed order.  Three launches for any number of edges, on the current
// stream, no host sync (the crop sizes travel in the kernel arguments).
// (Only c10 CUDA headers: ATen/cuda/CUDAContext.h drags in cuSPARSE/cuBLAS
// headers that a bare toolkit may lack.)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/attention_crop.h"
#include "../common/attention_crop_host.h"
#include "edge_reduce.cuh"
#include "warp_lanes.cuh"

namespace ktgfast {
namespace {

// WarpLanes plus what the crop math needs (as SerialCropLanes on the CPU).
struct CropWarpLanes : WarpLanes {
  KTG_HD void sync() const {
#if defined(__CUDA_ARCH__)
    __syncwarp();
#endif
  }
  KTG_HD int64_t min_index(int64_t i) const {
#if defined(__CUDA_ARCH__)
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const int64_t oi = __shfl_xor_sync(0xffffffffu, i, o);
      i = oi < i ? oi : i;
    }
#endif
    return i;
  }
};

// Phase 1: per-slot peaks and gate statistics; one warp per row.
template <typename scalar_t, typename acc_t>
__global__ void crop_slot_kernel(const CropProblem<scalar_t, acc_t> P) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (r >= P.M * P.B) return;  // whole warps leave together, shuffles stay converged
  crop_slot_row<acc_t>(CropWarpLanes{{static_cast<int>(threadIdx.x % kWarp)}}, P, r);
}

// Phase 2: every incoming edge of one destination row; one warp per row.
// workspace = [a | b] planes of (rows, area) then, when the gradient dtype is
// not the accumulation dtype, an (rows, H*W) accumulator plane.
template <typename scalar_t, typename acc_t>
__global__ void crop_edge_kernel(const CropProblem<scalar_t, acc_t> P, acc_t* workspace,
                                 int64_t area, bool in_place) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t rows = P.M * P.B, HW = P.H * P.W;
  if (r >= rows) return;
  CropScratch<acc_t> scratch{
      in_place ? reinterpret_cast<acc_t*>(P.grad + r * HW) : workspace + 2 * rows * area + r * HW,
      workspace + r * area, workspace + (rows + r) * area};
  crop_edge_row<acc_t>(CropWarpLanes{{static_cast<int>(threadIdx.x % kWarp)}}, P, r, scratch);
}

template <typename scalar_t>
void launch_crop_rows(const CropInputs& in, const at::Tensor& progress, at::IntArrayRef crop_sizes,
                      int64_t reduction, int64_t pull_norm, const at::Tensor* weights,
                      at::Tensor* row_loss, at::Tensor* row_gate, at::Tensor& grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = in.maps.size(0), B = in.maps.size(1), H = in.maps.size(2),
                W = in.maps.size(3);
  const int64_t rows = M * B;
  if (rows == 0) return;
  constexpr bool in_place = std::is_same<scalar_t, acc_t>::value;
  const int64_t area = max_crop_area(crop_sizes, H, W);
  const auto fopt = in.maps.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor workspace = at::empty({rows * (2 * area + (in_place ? 0 : H * W))}, fopt);
  auto stats = allocate_slot_stats(in.maps);
  const auto P = make_crop_problem<scalar_t, acc_t>(in, progress, crop_sizes, reduction,
                                                    pull_norm, weights, row_loss, row_gate,
                                                    stats, grad);
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  auto stream = c10::cuda::getCurrentCUDAStream();
  crop_slot_kernel<scalar_t, acc_t><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(P);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  crop_edge_kernel<scalar_t, acc_t><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(
      P, workspace.mutable_data_ptr<acc_t>(), area, in_place);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_crop_loss_cuda(
    const at::Tensor& maps_in, const at::Tensor& logits_in, const at::Tensor& labels_in,
    const at::Tensor& edge_index_in, const at::Tensor& edge_params_in, const at::Tensor& progress,
    at::IntArrayRef crop_sizes, int64_t reduction, int64_t pull_norm) {
  check_crop_inputs(maps_in, logits_in, labels_in, edge_index_in, edge_params_in, progress,
                    crop_sizes, reduction, pull_norm);
  const c10::cuda::CUDAGuard guard(maps_in.device());
  const auto in = prepare_crop_inputs(maps_in, logits_in, labels_in, edge_index_in,
                                      edge_params_in);
  const int64_t M = in.maps.size(0), B = in.maps.size(1), E = in.edge_index.size(0);
  auto out = allocate_crop_outputs(in.maps, E);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.maps.scalar_type(),
                                  "attention_crop_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_crop_rows<scalar_t>(in, progress, crop_sizes, reduction, pull_norm, nullptr,
                               &out.row_loss, &out.row_gate, out.grad);
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

at::Tensor attention_crop_loss_backward_cuda(
    const at::Tensor& grad_edge, const at::Tensor& maps_in, const at::Tensor& logits_in,
    const at::Tensor& labels_in, const at::Tensor& edge_index_in, const at::Tensor& edge_params_in,
    const at::Tensor& progress, at::IntArrayRef crop_sizes, int64_t reduction, int64_t pull_norm) {
  check_crop_inputs(maps_in, logits_in, labels_in, edge_index_in, edge_params_in, progress,
                    crop_sizes, reduction, pull_norm);
  check_crop_grad_edge(grad_edge, maps_in, edge_index_in.size(0));
  const c10::cuda::CUDAGuard guard(maps_in.device());
  const auto in = prepare_crop_inputs(maps_in, logits_in, labels_in, edge_index_in,
                                      edge_params_in);
  const auto weights = grad_edge.to(crop_acc_dtype(in.maps.scalar_type())).contiguous();
  auto grad = at::empty(in.maps.sizes(),
                        in.maps.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.maps.scalar_type(),
                                  "attention_crop_loss_backward_cuda", [&] {
    launch_crop_rows<scalar_t>(in, progress, crop_sizes, reduction, pull_norm, &weights, nullptr,
                               nullptr, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ktgfast, CUDA, m) {
  m.impl("attention_crop_loss", &attention_crop_loss_cuda);
  m.impl("attention_crop_loss_backward", &attention_crop_loss_backward_cuda);
}

}  // namespace ktgfast
