// The per-edge and per-destination reduction shared by the CPU edge-loss and
// attention-crop kernels: row losses (E, B) and gate weights (E, B) ->
// edge_loss (E,) = coef * sum / div, count (E,) of open gates, node_loss (M,)
// summed in edge order.  A fixed order: deterministic, whatever the threads.
// (csrc/cuda/edge_reduce.cuh is its CUDA twin.)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "../common/gated_edge_loss.h"

namespace ktgfast {

template <typename acc_t>
void reduce_edges(const at::Tensor& row_loss, const at::Tensor& row_gate,
                  const at::Tensor& edge_index, const at::Tensor& edge_params, int64_t B,
                  int64_t reduction, at::Tensor& edge_loss, at::Tensor& node_loss,
                  at::Tensor& count) {
  const int64_t E = edge_index.size(0);
  const acc_t div = reduction == kReduceMean ? static_cast<acc_t>(B) : acc_t(1);
  const acc_t* rl = row_loss.const_data_ptr<acc_t>();
  const acc_t* rg = row_gate.const_data_ptr<acc_t>();
  const int32_t* ei = edge_index.const_data_ptr<int32_t>();
  const double* ep = edge_params.const_data_ptr<double>();
  acc_t* el = edge_loss.mutable_data_ptr<acc_t>();
  acc_t* nl = node_loss.mutable_data_ptr<acc_t>();
  int64_t* cnt = count.mutable_data_ptr<int64_t>();
  for (int64_t e = 0; e < E; ++e) {
    acc_t s = 0;
    int64_t k = 0;
    for (int64_t n = 0; n < B; ++n) {
      s += rl[e * B + n];
      k += rg[e * B + n] > acc_t(0);
    }
    el[e] = static_cast<acc_t>(ep[e * kEdgeParamCols + kColCoef]) * s / div;
    cnt[e] = k;
    nl[ei[e * kEdgeIndexCols + kColDst]] += el[e];
  }
}

}  // namespace ktgfast
