// CPU kernels of ktgfast::attention_crop_loss and its backward.
//
// Rows (slot, sample) are split across threads with at::parallel_for; each row
// runs the shared math of common/attention_crop.h with a serial lane.  Per-sample
// results go to (E, B) buffers that are reduced afterwards in a fixed order, so
// results are deterministic for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/attention_crop.h"
#include "../common/attention_crop_host.h"
#include "edge_reduce.h"

namespace ktgfast {
namespace {

// Phase 1 (slot peaks and gate statistics) and phase 2 (edges) over a chunk
// of rows.  buf holds [a | b | acc] scratch: two crops of `area` cells and,
// when the gradient dtype is not the accumulation dtype, one (H*W) row.
template <typename scalar_t>
inline void crop_rows_chunk_impl(const CropProblem<scalar_t, at::opmath_type<scalar_t>>& P,
                                 int phase, int64_t begin, int64_t end, int64_t area,
                                 at::opmath_type<scalar_t>* buf) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool in_place = std::is_same<scalar_t, acc_t>::value;
  const int64_t HW = P.H * P.W;
  for (int64_t r = begin; r < end; ++r) {
    if (phase == 1) {
      crop_slot_row<acc_t>(SerialCropLanes{}, P, r);
    } else {
      acc_t* acc = in_place ? reinterpret_cast<acc_t*>(P.grad + r * HW) : buf + 2 * area;
      crop_edge_row<acc_t>(SerialCropLanes{}, P, r, CropScratch<acc_t>{acc, buf, buf + area});
    }
  }
}

// One clone per CPU level, picked at load time (ifunc), as for the edge-loss op.
// `flatten` inlines the whole row math into each clone: an outlined helper
// would be compiled once, for the baseline level only.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define KTG_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define KTG_CPU_CLONES
#endif

#define KTG_DEFINE_CROP_ROWS_CHUNK(T)                                                        \
  KTG_CPU_CLONES void crop_rows_chunk(const CropProblem<T, at::opmath_type<T>>& P, int phase, \
                                      int64_t begin, int64_t end, int64_t area,              \
                                      at::opmath_type<T>* buf) {                             \
    crop_rows_chunk_impl<T>(P, phase, begin, end, area, buf);                                \
  }
KTG_DEFINE_CROP_ROWS_CHUNK(float)
KTG_DEFINE_CROP_ROWS_CHUNK(double)
KTG_DEFINE_CROP_ROWS_CHUNK(c10::Half)
KTG_DEFINE_CROP_ROWS_CHUNK(c10::BFloat16)
#undef KTG_DEFINE_CROP_ROWS_CHUNK

template <typename scalar_t>
void run_crop_rows(const CropInputs& in, const at::Tensor& progress, at::IntArrayRef crop_sizes,
                   int64_t reduction, int64_t pull_norm, const at::Tensor* weights,
                   at::Tensor* row_loss, at::Tensor* row_gate, at::Tensor& grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = in.maps.size(0), B = in.maps.size(1), H = in.maps.size(2),
                W = in.maps.size(3);
  auto stats = allocate_slot_stats(in.maps);
  const auto P = make_crop_problem<scalar_t, acc_t>(in, progress, crop_sizes, reduction,
                                                    pull_norm, weights, row_loss, row_gate,
                                                    stats, grad);
  const int64_t area = max_crop_area(crop_sizes, H, W);
  const int64_t grain = std::max<int64_t>(1, 16384 / (H * W + area * in.edge_index.size(0)));
  for (int phase : {1, 2}) {
    at::parallel_for(0, M * B, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(phase == 1 ? 0 : 2 * area + H * W);
      crop_rows_chunk(P, phase, begin, end, area, buf.data());
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_crop_loss_cpu(
    const at::Tensor& maps_in, const at::Tensor& logits_in, const at::Tensor& labels_in,
    const at::Tensor& edge_index_in, const at::Tensor& edge_params_in, const at::Tensor& progress,
    at::IntArrayRef crop_sizes, int64_t reduction, int64_t pull_norm) {
  check_crop_inputs(maps_in, logits_in, labels_in, edge_index_in, edge_params_in, progress,
                    crop_sizes, reduction, pull_norm);
  check_crop_values_cpu(maps_in, logits_in, labels_in, edge_index_in);
  const auto in = prepare_crop_inputs(maps_in, logits_in, labels_in, edge_index_in,
                                      edge_params_in);
  const int64_t B = in.maps.size(1), E = in.edge_index.size(0);
  auto out = allocate_crop_outputs(in.maps, E);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.maps.scalar_type(),
                                  "attention_crop_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    run_crop_rows<scalar_t>(in, progress, crop_sizes, reduction, pull_norm, nullptr,
                            &out.row_loss, &out.row_gate, out.grad);
    reduce_edges<acc_t>(out.row_loss, out.row_gate, in.edge_index, in.edge_params, B, reduction,
                        out.edge_loss, out.node_loss, out.count);
  });
  return {out.edge_loss, out.node_loss, out.count, out.grad};
}

at::Tensor attention_crop_loss_backward_cpu(
    const at::Tensor& grad_edge, const at::Tensor& maps_in, const at::Tensor& logits_in,
    const at::Tensor& labels_in, const at::Tensor& edge_index_in, const at::Tensor& edge_params_in,
    const at::Tensor& progress, at::IntArrayRef crop_sizes, int64_t reduction, int64_t pull_norm) {
  check_crop_inputs(maps_in, logits_in, labels_in, edge_index_in, edge_params_in, progress,
                    crop_sizes, reduction, pull_norm);
  check_crop_grad_edge(grad_edge, maps_in, edge_index_in.size(0));
  check_crop_values_cpu(maps_in, logits_in, labels_in, edge_index_in);
  const auto in = prepare_crop_inputs(maps_in, logits_in, labels_in, edge_index_in,
                                      edge_params_in);
  const auto weights = grad_edge.to(crop_acc_dtype(in.maps.scalar_type())).contiguous();
  auto grad = at::empty(in.maps.sizes(),
                        in.maps.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.maps.scalar_type(),
                                  "attention_crop_loss_backward_cpu", [&] {
    run_crop_rows<scalar_t>(in, progress, crop_sizes, reduction, pull_norm, &weights, nullptr,
                            nullptr, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ktgfast, CPU, m) {
  m.impl("attention_crop_loss", &attention_crop_loss_cpu);
  m.impl("attention_crop_loss_backward", &attention_crop_loss_backward_cpu);
}

}  // namespace ktgfast
