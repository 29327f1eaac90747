// Host-side argument checks and output allocation for the gated edge-loss ops,
// shared by the CPU and CUDA entry points.  Only metadata is inspected here
// (never tensor data), so the CUDA path stays free of host synchronisation;
// value checks of CPU tensors live in check_values_cpu().
#pragma once

#include <ATen/ATen.h>

#include "gated_edge_loss.h"

namespace ktgfast {

inline void check_inputs(const at::Tensor& logits, const at::Tensor& labels,
                         const at::Tensor& edge_index, const at::Tensor& edge_params,
                         const at::Tensor& progress, int64_t reduction) {
  TORCH_CHECK(logits.dim() == 3,
              "gated_edge_loss: logits must be (M, B, C) = (nodes, batch, classes), got shape ",
              logits.sizes());
  const auto dt = logits.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "gated_edge_loss: logits dtype must be float32, float64, float16 or bfloat16, got ",
              dt);
  TORCH_CHECK(logits.size(2) >= 1, "gated_edge_loss: logits need at least one class (C >= 1)");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(1),
              "gated_edge_loss: labels must be (B,) with B = logits.size(1) = ", logits.size(1),
              ", got shape ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "gated_edge_loss: labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(edge_index.dim() == 2 && edge_index.size(1) == kEdgeIndexCols &&
                  edge_index.scalar_type() == at::kInt,
              "gated_edge_loss: edge_index must be int32 (E, 4) [src, dst, loss, gate], got ",
              edge_index.scalar_type(), " ", edge_index.sizes());
  TORCH_CHECK(edge_params.dim() == 2 && edge_params.size(1) == kEdgeParamCols &&
                  edge_params.size(0) == edge_index.size(0) &&
                  edge_params.scalar_type() == at::kDouble,
              "gated_edge_loss: edge_params must be float64 (E, 4) [T, coef, gate_a, gate_b] with "
              "E = edge_index.size(0) = ", edge_index.size(0), ", got ",
              edge_params.scalar_type(), " ", edge_params.sizes());
  TORCH_CHECK(progress.numel() == 1 && progress.scalar_type() == at::kDouble,
              "gated_edge_loss: progress must be a one-element float64 tensor (k / k_end), got ",
              progress.scalar_type(), " with ", progress.numel(), " elements");
  TORCH_CHECK(reduction == kReduceMean || reduction == kReduceSum,
              "gated_edge_loss: reduction must be 0 (mean) or 1 (sum), got ", reduction);
  const auto dev = logits.device();
  for (const at::Tensor* t : {&labels, &edge_index, &edge_params, &progress}) {
    TORCH_CHECK(t->device() == dev, "gated_edge_loss: all tensors must be on ", dev,
                " (the logits' device); found one on ", t->device());
  }
}

// Value checks that need to read CPU memory: the edge table and the labels.
inline void check_values_cpu(const at::Tensor& logits, const at::Tensor& labels,
                             const at::Tensor& edge_index, const at::Tensor& edge_params) {
  const int64_t M = logits.size(0), C = logits.size(2), E = edge_index.size(0);
  const auto ei = edge_index.contiguous();
  const auto ep = edge_params.contiguous();
  const int32_t* idx = ei.data_ptr<int32_t>();
  const double* par = ep.data_ptr<double>();
  bool uses_labels = false;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t src = idx[e * kEdgeIndexCols + kColSrc], dst = idx[e * kEdgeIndexCols + kColDst];
    const int32_t loss = idx[e * kEdgeIndexCols + kColLoss], gate = idx[e * kEdgeIndexCols + kColGate];
    const double temp = par[e * kEdgeParamCols + kColTemp];
    TORCH_CHECK(src == kLabelSource || (src >= 0 && src < M), "gated_edge_loss: edge ", e,
                " has source ", src, "; allowed: -1 (label) or a node in [0, ", M, ")");
    TORCH_CHECK(dst >= 0 && dst < M, "gated_edge_loss: edge ", e, " has destination ", dst,
                "; allowed: a node in [0, ", M, ")");
    TORCH_CHECK(loss >= 0 && loss < kNumLossKinds, "gated_edge_loss: edge ", e,
                " has loss kind ", loss, "; allowed: 0 kl, 1 ce, 2 cos, 3 pl");
    TORCH_CHECK(gate >= 0 && gate < kNumGateKinds, "gated_edge_loss: edge ", e, " has gate kind ",
                gate, "; allowed: 0 through, 1 cutoff, 2 linear, 3 neg_linear, 4 correct, 5 sine, "
                "6 threshold");
    TORCH_CHECK(temp > 0 && std::isfinite(temp), "gated_edge_loss: edge ", e,
                " has temperature ", temp, "; it must be a finite number > 0");
    TORCH_CHECK(src != kLabelSource || loss == kLossKL || loss == kLossCE,
                "gated_edge_loss: edge ", e, " goes from the label with loss kind ", loss,
                "; a label edge allows only kl (= ce for a one-hot) or ce");
    TORCH_CHECK(src == kLabelSource || loss != kLossCE, "gated_edge_loss: edge ", e,
                " has loss ce but source node ", src, "; ce is the label edge's loss");
    if (gate != kGateCutoff && (src == kLabelSource || loss == kLossCE || gate == kGateCorrect)) {
      uses_labels = true;
    }
  }
  if (uses_labels) {
    const auto lab = labels.contiguous();
    const int64_t* y = lab.data_ptr<int64_t>();
    for (int64_t n = 0; n < lab.numel(); ++n) {
      TORCH_CHECK(y[n] >= 0 && y[n] < C, "gated_edge_loss: label ", y[n], " of sample ", n,
                  " is out of range; allowed: [0, ", C, ")");
    }
  }
}

// The accumulation dtype of the loss outputs.
inline at::ScalarType loss_dtype(at::ScalarType logits_dtype) {
  return logits_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// The inputs as the kernels read them: unit class stride for the logits (other
// strides are kept, so slices are not copied), everything else contiguous.
struct EdgeLossInputs {
  at::Tensor logits, labels, edge_index, edge_params;
};

inline EdgeLossInputs prepare_inputs(const at::Tensor& logits, const at::Tensor& labels,
                                     const at::Tensor& edge_index, const at::Tensor& edge_params) {
  return {logits.stride(2) == 1 ? logits : logits.contiguous(), labels.contiguous(),
          edge_index.contiguous(), edge_params.contiguous()};
}

// Forward outputs plus the (E, B) per-sample buffers the reduction reads.
struct EdgeLossOutputs {
  at::Tensor row_loss, row_gate, grad, edge_loss, node_loss, count;
};

inline EdgeLossOutputs allocate_outputs(const at::Tensor& logits, int64_t E) {
  const int64_t M = logits.size(0), B = logits.size(1);
  const auto fopt = logits.options().dtype(loss_dtype(logits.scalar_type()));
  return {at::zeros({E, B}, fopt), at::zeros({E, B}, fopt),
          at::empty({M, B, logits.size(2)}, logits.options()), at::zeros({E}, fopt),
          at::zeros({M}, fopt), at::zeros({E}, logits.options().dtype(at::kLong))};
}

// The kernels' view of one call (pointers into the prepared tensors); the
// phase-1 buffers e1 / stats / argmax are allocated by the caller.
template <typename scalar_t, typename acc_t>
EdgeLossProblem<scalar_t, acc_t> make_problem(
    const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& edge_index,
    const at::Tensor& edge_params, const at::Tensor& progress, int64_t reduction,
    const at::Tensor* weights, at::Tensor* row_loss, at::Tensor* row_gate, acc_t* e1,
    at::Tensor& stats, at::Tensor& argmax, at::Tensor& grad) {
  const int64_t B = logits.size(1);
  return {logits.template const_data_ptr<scalar_t>(), logits.stride(0), logits.stride(1),
          logits.size(0), B, logits.size(2), edge_index.size(0),
          labels.const_data_ptr<int64_t>(), edge_index.const_data_ptr<int32_t>(),
          edge_params.const_data_ptr<double>(), progress.const_data_ptr<double>(),
          reduction == kReduceMean ? static_cast<acc_t>(B) : acc_t(1),
          weights ? weights->template const_data_ptr<acc_t>() : nullptr,
          row_loss ? row_loss->template mutable_data_ptr<acc_t>() : nullptr,
          row_gate ? row_gate->template mutable_data_ptr<acc_t>() : nullptr, e1,
          stats.template mutable_data_ptr<acc_t>(), argmax.mutable_data_ptr<int64_t>(),
          grad.template mutable_data_ptr<scalar_t>()};
}

inline void check_grad_edge(const at::Tensor& grad_edge, int64_t E) {
  TORCH_CHECK(grad_edge.dim() == 1 && grad_edge.size(0) == E,
              "gated_edge_loss_backward: grad_edge must be (E,) with E = ", E, ", got ",
              grad_edge.sizes());
}

}  // namespace ktgfast
