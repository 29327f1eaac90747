// Host-side argument checks, input preparation and output allocation of the
// attention-crop ops, shared by the CPU and CUDA entry points.  Only metadata
// is inspected here (never tensor data), so the CUDA path stays free of host
// synchronisation; value checks of CPU tensors live in check_crop_values_cpu().
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "attention_crop.h"

namespace ktgfast {

inline bool is_float_dtype(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16;
}

inline void check_crop_inputs(const at::Tensor& maps, const at::Tensor& logits,
                              const at::Tensor& labels, const at::Tensor& edge_index,
                              const at::Tensor& edge_params, const at::Tensor& progress,
                              at::IntArrayRef crop_sizes, int64_t reduction, int64_t pull_norm) {
  TORCH_CHECK(maps.dim() == 4,
              "attention_crop_loss: maps must be (M, B, H, W) = (nodes, batch, height, width), "
              "got shape ", maps.sizes());
  TORCH_CHECK(is_float_dtype(maps.scalar_type()),
              "attention_crop_loss: maps dtype must be float32, float64, float16 or bfloat16, got ",
              maps.scalar_type());
  TORCH_CHECK(maps.size(2) >= 1 && maps.size(3) >= 1,
              "attention_crop_loss: maps need at least one cell (H, W >= 1), got shape ",
              maps.sizes());
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == maps.size(0) &&
                  logits.size(1) == maps.size(1) && logits.size(2) >= 1,
              "attention_crop_loss: logits must be (M, B, C) with (M, B) = (", maps.size(0), ", ",
              maps.size(1), ") from maps and C >= 1, got shape ", logits.sizes());
  TORCH_CHECK(is_float_dtype(logits.scalar_type()),
              "attention_crop_loss: logits dtype must be float32, float64, float16 or bfloat16, "
              "got ", logits.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == maps.size(1),
              "attention_crop_loss: labels must be (B,) with B = maps.size(1) = ", maps.size(1),
              ", got shape ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong,
              "attention_crop_loss: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(edge_index.dim() == 2 && edge_index.size(1) == kEdgeIndexCols &&
                  edge_index.scalar_type() == at::kInt,
              "attention_crop_loss: edge_index must be int32 (E, 4) [src, dst, loss, gate], got ",
              edge_index.scalar_type(), " ", edge_index.sizes());
  TORCH_CHECK(edge_params.dim() == 2 && edge_params.size(1) == kEdgeParamCols &&
                  edge_params.size(0) == edge_index.size(0) &&
                  edge_params.scalar_type() == at::kDouble,
              "attention_crop_loss: edge_params must be float64 (E, 4) [T, coef, gate_a, gate_b] "
              "with E = edge_index.size(0) = ", edge_index.size(0), ", got ",
              edge_params.scalar_type(), " ", edge_params.sizes());
  TORCH_CHECK(progress.numel() == 1 && progress.scalar_type() == at::kDouble,
              "attention_crop_loss: progress must be a one-element float64 tensor (k / k_end), "
              "got ", progress.scalar_type(), " with ", progress.numel(), " elements");
  TORCH_CHECK(!crop_sizes.empty() && static_cast<int64_t>(crop_sizes.size()) <= kMaxCrops,
              "attention_crop_loss: crop_sizes must hold 1 to ", kMaxCrops, " sizes, got ",
              crop_sizes.size());
  for (const int64_t k : crop_sizes) {
    TORCH_CHECK(k >= 1 && k <= INT32_MAX, "attention_crop_loss: crop size ", k,
                " is not allowed; crop sizes must be positive, got ", crop_sizes);
  }
  TORCH_CHECK(reduction == kReduceMean || reduction == kReduceSum,
              "attention_crop_loss: reduction must be 0 (mean) or 1 (sum), got ", reduction);
  TORCH_CHECK(pull_norm == kPullMean || pull_norm == kPullSum,
              "attention_crop_loss: pull_norm must be 0 (mean) or 1 (sum), got ", pull_norm);
  const auto dev = maps.device();
  for (const at::Tensor* t : {&logits, &labels, &edge_index, &edge_params, &progress}) {
    TORCH_CHECK(t->device() == dev, "attention_crop_loss: all tensors must be on ", dev,
                " (the maps' device); found one on ", t->device());
  }
}

// Value checks that need to read CPU memory: the edge table and, where a
// correct gate compares with them, the labels.
inline void check_crop_values_cpu(const at::Tensor& maps, const at::Tensor& logits,
                                  const at::Tensor& labels, const at::Tensor& edge_index) {
  const int64_t M = maps.size(0), C = logits.size(2), E = edge_index.size(0);
  const auto ei = edge_index.contiguous();
  const int32_t* idx = ei.const_data_ptr<int32_t>();
  bool uses_labels = false;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t* row = idx + e * kEdgeIndexCols;
    const int32_t src = row[kColSrc], dst = row[kColDst], loss = row[kColLoss], gate = row[kColGate];
    TORCH_CHECK(src >= 0 && src < M, "attention_crop_loss: edge ", e, " has source ", src,
                "; allowed: a node in [0, ", M, ") (an attention edge never starts at the label)");
    TORCH_CHECK(dst >= 0 && dst < M, "attention_crop_loss: edge ", e, " has destination ", dst,
                "; allowed: a node in [0, ", M, ")");
    TORCH_CHECK(loss >= 0 && loss < kNumAttLossKinds, "attention_crop_loss: edge ", e,
                " has loss kind ", loss, "; allowed: 0 pull, 1 push");
    TORCH_CHECK(gate >= 0 && gate < kNumGateKinds, "attention_crop_loss: edge ", e,
                " has gate kind ", gate, "; allowed: 0 through, 1 cutoff, 2 linear, "
                "3 neg_linear, 4 correct, 5 sine, 6 threshold");
    uses_labels |= gate == kGateCorrect;
  }
  if (uses_labels) {
    const auto lab = labels.contiguous();
    const int64_t* y = lab.const_data_ptr<int64_t>();
    for (int64_t n = 0; n < lab.numel(); ++n) {
      TORCH_CHECK(y[n] >= 0 && y[n] < C, "attention_crop_loss: label ", y[n], " of sample ", n,
                  " is out of range; allowed: [0, ", C, ")");
    }
  }
}

// The accumulation dtype: double for float64 maps, float otherwise.
inline at::ScalarType crop_acc_dtype(at::ScalarType maps_dtype) {
  return maps_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// The inputs as the kernels read them: maps with unit column stride (other
// strides kept, so slices are not copied), logits in the accumulation dtype
// with unit class stride (they are only read by gates, as the reference reads
// them after the same cast), everything else contiguous.
struct CropInputs {
  at::Tensor maps, logits, labels, edge_index, edge_params;
};

inline CropInputs prepare_crop_inputs(const at::Tensor& maps, const at::Tensor& logits,
                                      const at::Tensor& labels, const at::Tensor& edge_index,
                                      const at::Tensor& edge_params) {
  at::Tensor z = logits.to(crop_acc_dtype(maps.scalar_type()));
  if (z.stride(2) != 1) z = z.contiguous();
  return {maps.stride(3) == 1 ? maps : maps.contiguous(), z, labels.contiguous(),
          edge_index.contiguous(), edge_params.contiguous()};
}

inline CropSizes make_crop_sizes(at::IntArrayRef crop_sizes) {
  CropSizes c{};
  c.count = static_cast<int32_t>(crop_sizes.size());
  for (int32_t i = 0; i < c.count; ++i) c.size[i] = static_cast<int32_t>(crop_sizes[i]);
  return c;
}

// Cells of the largest crop window on an (H, W) map (the flat crop buffers).
inline int64_t max_crop_area(at::IntArrayRef crop_sizes, int64_t H, int64_t W) {
  int64_t area = 1;
  for (const int64_t k : crop_sizes) area = std::max(area, std::min(k, H) * std::min(k, W));
  return area;
}

// Forward outputs plus the (E, B) per-sample buffers the reduction reads.
struct CropOutputs {
  at::Tensor row_loss, row_gate, grad, edge_loss, node_loss, count;
};

inline CropOutputs allocate_crop_outputs(const at::Tensor& maps, int64_t E) {
  const int64_t M = maps.size(0), B = maps.size(1);
  const auto fopt = maps.options().dtype(crop_acc_dtype(maps.scalar_type()));
  return {at::zeros({E, B}, fopt), at::zeros({E, B}, fopt),
          at::empty(maps.sizes(), maps.options().memory_format(at::MemoryFormat::Contiguous)),
          at::zeros({E}, fopt), at::zeros({M}, fopt),
          at::zeros({E}, maps.options().dtype(at::kLong))};
}

// Phase-1 buffers: peaks, and the logits' arg-max and max-probability.
struct CropSlotStats {
  at::Tensor peak, top_class, top_prob;
};

inline CropSlotStats allocate_slot_stats(const at::Tensor& maps) {
  const int64_t rows = maps.size(0) * maps.size(1);
  const auto lopt = maps.options().dtype(at::kLong);
  return {at::empty({rows}, lopt), at::empty({rows}, lopt),
          at::empty({rows}, maps.options().dtype(crop_acc_dtype(maps.scalar_type())))};
}

// The kernels' view of one call (pointers into the prepared tensors).
template <typename scalar_t, typename acc_t>
CropProblem<scalar_t, acc_t> make_crop_problem(const CropInputs& in, const at::Tensor& progress,
                                               at::IntArrayRef crop_sizes, int64_t reduction,
                                               int64_t pull_norm, const at::Tensor* weights,
                                               at::Tensor* row_loss, at::Tensor* row_gate,
                                               CropSlotStats& stats, at::Tensor& grad) {
  const at::Tensor& m = in.maps;
  const at::Tensor& z = in.logits;
  const int64_t B = m.size(1);
  return {m.template const_data_ptr<scalar_t>(), m.stride(0), m.stride(1), m.stride(2),
          m.size(0), B, m.size(2), m.size(3), in.edge_index.size(0),
          z.template const_data_ptr<acc_t>(), z.stride(0), z.stride(1), z.size(2),
          in.labels.const_data_ptr<int64_t>(), in.edge_index.const_data_ptr<int32_t>(),
          in.edge_params.const_data_ptr<double>(), progress.const_data_ptr<double>(),
          make_crop_sizes(crop_sizes), pull_norm == kPullMean,
          reduction == kReduceMean ? static_cast<acc_t>(B) : acc_t(1),
          weights ? weights->template const_data_ptr<acc_t>() : nullptr,
          row_loss ? row_loss->template mutable_data_ptr<acc_t>() : nullptr,
          row_gate ? row_gate->template mutable_data_ptr<acc_t>() : nullptr,
          stats.peak.mutable_data_ptr<int64_t>(), stats.top_class.mutable_data_ptr<int64_t>(),
          stats.top_prob.template mutable_data_ptr<acc_t>(),
          grad.template mutable_data_ptr<scalar_t>()};
}

inline void check_crop_grad_edge(const at::Tensor& grad_edge, const at::Tensor& maps, int64_t E) {
  TORCH_CHECK(grad_edge.dim() == 1 && grad_edge.size(0) == E,
              "attention_crop_loss_backward: grad_edge must be (E,) with E = ", E, ", got ",
              grad_edge.sizes());
  TORCH_CHECK(grad_edge.device() == maps.device(), "attention_crop_loss_backward: grad_edge "
              "must be on ", maps.device(), " (the maps' device), got ", grad_edge.device());
}

}  // namespace ktgfast
