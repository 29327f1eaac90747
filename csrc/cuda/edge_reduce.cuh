// The per-edge and per-destination reduction shared by the edge-loss and
// attention-crop CUDA kernels: row losses (E, B) and gate weights (E, B) ->
// edge_loss (E,) = coef * sum / div, count (E,) of open gates, node_loss (M,)
// summed in edge order.  One block, fixed reduction tree: deterministic.
#pragma once

#include <cstdint>

#include "../common/gated_edge_loss.h"

namespace ktgfast {

constexpr int kReduceThreads = 256;

template <typename acc_t>
__global__ void edge_reduce_kernel(const acc_t* __restrict__ row_loss,
                                   const acc_t* __restrict__ row_gate,
                                   const int32_t* __restrict__ edge_index,
                                   const double* __restrict__ edge_params, int64_t E, int64_t B,
                                   int64_t M, acc_t div, acc_t* edge_loss, acc_t* node_loss,
                                   int64_t* count) {
  __shared__ acc_t s_sum[kReduceThreads];
  __shared__ int64_t s_cnt[kReduceThreads];
  const int tid = threadIdx.x;
  for (int64_t e = 0; e < E; ++e) {
    acc_t s = 0;
    int64_t k = 0;
    for (int64_t n = tid; n < B; n += kReduceThreads) {
      s += row_loss[e * B + n];
      k += row_gate[e * B + n] > acc_t(0);
    }
    s_sum[tid] = s;
    s_cnt[tid] = k;
    __syncthreads();
    for (int w = kReduceThreads / 2; w > 0; w >>= 1) {
      if (tid < w) {
        s_sum[tid] += s_sum[tid + w];
        s_cnt[tid] += s_cnt[tid + w];
      }
      __syncthreads();
    }
    if (tid == 0) {
      edge_loss[e] = static_cast<acc_t>(edge_params[e * kEdgeParamCols + kColCoef]) * s_sum[0] / div;
      count[e] = s_cnt[0];
    }
    __syncthreads();
  }
  // Per-destination sums in edge order (deterministic).
  for (int64_t m = tid; m < M; m += kReduceThreads) {
    acc_t s = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (edge_index[e * kEdgeIndexCols + kColDst] == m) s += edge_loss[e];
    }
    node_loss[m] = s;
  }
}

}  // namespace ktgfast
