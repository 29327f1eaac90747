// Host-side argument checks and the work tables of ktgfast::pcgrad, shared by
// the CPU and CUDA entry points.  Only metadata is inspected here (never tensor
// data), so the CUDA path stays free of host synchronisation; the value check
// of a CPU order tensor is check_order_values_cpu().
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "pcgrad.h"

namespace ktgfast {
namespace pcgrad {

inline void check_inputs(at::TensorList grads, const at::Tensor& order, int64_t reduction) {
  TORCH_CHECK(!grads.empty(), "pcgrad: grads must hold at least one tensor (K, *shape)");
  const at::Tensor& g0 = grads[0];
  TORCH_CHECK(g0.dim() >= 1, "pcgrad: grads[0] must be (K, *shape), got a 0-dim tensor");
  const int64_t K = g0.size(0);
  TORCH_CHECK(K >= 1, "pcgrad: need K >= 1 gradients, got K = ", K);
  const auto dt = g0.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "pcgrad: grads dtype must be float32, float64, float16 or bfloat16, got ", dt);
  for (size_t t = 0; t < grads.size(); ++t) {
    const at::Tensor& g = grads[t];
    TORCH_CHECK(g.dim() >= 1 && g.size(0) == K, "pcgrad: grads[", t,
                "] must be (K, *shape) with K = grads[0].size(0) = ", K, ", got shape ",
                g.sizes());
    TORCH_CHECK(g.scalar_type() == dt, "pcgrad: all grads must have one dtype; grads[0] is ", dt,
                ", grads[", t, "] is ", g.scalar_type());
    TORCH_CHECK(g.device() == g0.device(), "pcgrad: all grads must be on one device; grads[0] is on ",
                g0.device(), ", grads[", t, "] on ", g.device());
  }
  TORCH_CHECK(order.dim() == 2 && order.size(0) == K && order.size(1) == K - 1 &&
                  order.scalar_type() == at::kLong,
              "pcgrad: order must be int64 (K, K-1) with K = ", K, ", got ", order.scalar_type(),
              " ", order.sizes());
  TORCH_CHECK(order.device() == g0.device(), "pcgrad: order must be on ", g0.device(),
              " (the grads' device), got ", order.device());
  TORCH_CHECK(reduction == kSum || reduction == kMean,
              "pcgrad: reduction must be 0 (sum) or 1 (mean), got ", reduction);
}

// Row i of order must be a permutation of {0..K-1} \ {i}.
inline void check_order_values_cpu(const at::Tensor& order) {
  const at::Tensor o = order.contiguous();
  const int64_t K = o.size(0);
  const int64_t* v = o.const_data_ptr<int64_t>();
  std::vector<char> seen(K);
  for (int64_t i = 0; i < K; ++i) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t t = 0; t + 1 < K; ++t) {
      const int64_t j = v[i * (K - 1) + t];
      TORCH_CHECK(j >= 0 && j < K && j != i && !seen[j], "pcgrad: order row ", i,
                  " must be a permutation of the other tasks (0..", K - 1, " without ", i,
                  "); entry ", t, " is ", j);
      seen[j] = 1;
    }
  }
}

// The op's view of one call: per tensor the (K, n) rows it reads (unit element
// stride; other layouts are copied once) and its contiguous output; the
// table (int64, on the host) = TensorRef rows, then Chunk rows.
struct Work {
  int64_t K = 0;
  std::vector<at::Tensor> rows;
  std::vector<at::Tensor> outs;
  at::Tensor table;
  int64_t num_tensors = 0;
  int64_t num_chunks = 0;
};

inline Work make_work(at::TensorList grads, int64_t chunk_len, bool pinned) {
  Work w;
  w.K = grads[0].size(0);
  std::vector<Chunk> chunks;
  std::vector<TensorRef> refs;
  for (size_t t = 0; t < grads.size(); ++t) {
    at::Tensor r = grads[t].reshape({w.K, -1});
    if (r.size(1) > 1 && r.stride(1) != 1) r = r.contiguous();
    at::Tensor out = at::empty(grads[t].sizes().slice(1), grads[t].options());
    const int64_t n = r.size(1);
    refs.push_back({reinterpret_cast<int64_t>(r.const_data_ptr()), r.stride(0),
                    reinterpret_cast<int64_t>(out.mutable_data_ptr()), n});
    for (int64_t s = 0; s < n; s += chunk_len) {
      chunks.push_back({static_cast<int64_t>(t), s, std::min(chunk_len, n - s)});
    }
    w.rows.push_back(r);
    w.outs.push_back(out);
  }
  w.num_tensors = static_cast<int64_t>(refs.size());
  w.num_chunks = static_cast<int64_t>(chunks.size());
  const int64_t words = 4 * w.num_tensors + 3 * w.num_chunks;
  w.table = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(pinned));
  int64_t* dst = w.table.mutable_data_ptr<int64_t>();
  std::memcpy(dst, refs.data(), refs.size() * sizeof(TensorRef));
  if (!chunks.empty()) {
    std::memcpy(dst + 4 * w.num_tensors, chunks.data(), chunks.size() * sizeof(Chunk));
  }
  return w;
}

}  // namespace pcgrad
}  // namespace ktgfast
