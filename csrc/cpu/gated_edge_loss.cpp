// CPU kernels of ktgfast::gated_edge_loss and its backward.
//
// Rows (destination, sample) are split across threads with at::parallel_for;
// each row runs the shared math of common/gated_edge_loss.h with a serial lane
// (stride-1 class loops that the compiler vectorises).  Per-sample results go to
// (E, B) buffers that are reduced afterwards in a fixed order, so results are
// deterministic for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/gated_edge_loss.h"
#include "../common/gated_edge_loss_host.h"
#include "edge_reduce.h"

namespace ktgfast {
namespace {

// Phase 1 (slot statistics) and phase 2 (edges) over a chunk of rows.
template <typename scalar_t>
inline void rows_chunk_impl(const EdgeLossProblem<scalar_t, at::opmath_type<scalar_t>>& P,
                            int phase, int64_t begin, int64_t end,
                            at::opmath_type<scalar_t>* buf) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool in_place = std::is_same<scalar_t, acc_t>::value;
  for (int64_t r = begin; r < end; ++r) {
    if (phase == 1) {
      slot_stats_row<acc_t>(SerialLanes{}, P, r);
    } else {
      acc_t* acc = in_place ? reinterpret_cast<acc_t*>(P.grad + r * P.C) : buf + 2 * P.C;
      edge_loss_row<acc_t>(SerialLanes{}, P, r, RowScratch<acc_t>{acc, buf, buf + P.C});
    }
  }
}

// One clone per CPU level, picked at load time (ifunc): AVX2+FMA roughly
// doubles the class loops' throughput over the SSE2 baseline, and the binary
// still runs on any x86-64.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define KTG_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KTG_CPU_CLONES
#endif

#define KTG_DEFINE_ROWS_CHUNK(T)                                                          \
  KTG_CPU_CLONES void rows_chunk(const EdgeLossProblem<T, at::opmath_type<T>>& P, int phase, \
                                 int64_t begin, int64_t end, at::opmath_type<T>* buf) {    \
    rows_chunk_impl<T>(P, phase, begin, end, buf);                                        \
  }
KTG_DEFINE_ROWS_CHUNK(float)
KTG_DEFINE_ROWS_CHUNK(double)
KTG_DEFINE_ROWS_CHUNK(c10::Half)
KTG_DEFINE_ROWS_CHUNK(c10::BFloat16)
#undef KTG_DEFINE_ROWS_CHUNK

template <typename scalar_t>
void run_rows(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& edge_index,
              const at::Tensor& edge_params, const at::Tensor& progress, int64_t reduction,
              const at::Tensor* weights, at::Tensor* row_loss, at::Tensor* row_gate,
              at::Tensor& grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = logits.size(0), B = logits.size(1), C = logits.size(2);
  const auto fopt = logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor e1 = at::empty({M * B, C}, fopt);
  at::Tensor stats = at::empty({M * B, 2}, fopt);
  at::Tensor argmax = at::empty({M * B}, logits.options().dtype(at::kLong));
  const auto P = make_problem<scalar_t, acc_t>(logits, labels, edge_index, edge_params, progress,
                                               reduction, weights, row_loss, row_gate,
                                               e1.mutable_data_ptr<acc_t>(), stats, argmax, grad);
  const int64_t grain = std::max<int64_t>(1, 4096 / C);
  for (int phase : {1, 2}) {
    at::parallel_for(0, M * B, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(phase == 1 ? 0 : 3 * C);
      rows_chunk(P, phase, begin, end, buf.data());
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gated_edge_loss_cpu(
    const at::Tensor& logits_in, const at::Tensor& labels_in, const at::Tensor& edge_index_in,
    const at::Tensor& edge_params_in, const at::Tensor& progress, int64_t reduction) {
  check_inputs(logits_in, labels_in, edge_index_in, edge_params_in, progress, reduction);
  check_values_cpu(logits_in, labels_in, edge_index_in, edge_params_in);
  const auto in = prepare_inputs(logits_in, labels_in, edge_index_in, edge_params_in);
  const int64_t B = in.logits.size(1), E = in.edge_index.size(0);
  auto out = allocate_outputs(in.logits, E);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.logits.scalar_type(),
                                  "gated_edge_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    run_rows<scalar_t>(in.logits, in.labels, in.edge_index, in.edge_params, progress, reduction,
                       nullptr, &out.row_loss, &out.row_gate, out.grad);
    reduce_edges<acc_t>(out.row_loss, out.row_gate, in.edge_index, in.edge_params, B, reduction,
                        out.edge_loss, out.node_loss, out.count);
  });
  return {out.edge_loss, out.node_loss, out.count, out.grad};
}

at::Tensor gated_edge_loss_backward_cpu(const at::Tensor& grad_edge, const at::Tensor& logits_in,
                                        const at::Tensor& labels_in,
                                        const at::Tensor& edge_index_in,
                                        const at::Tensor& edge_params_in,
                                        const at::Tensor& progress, int64_t reduction) {
  check_inputs(logits_in, labels_in, edge_index_in, edge_params_in, progress, reduction);
  check_grad_edge(grad_edge, edge_index_in.size(0));
  check_values_cpu(logits_in, labels_in, edge_index_in, edge_params_in);
  const auto in = prepare_inputs(logits_in, labels_in, edge_index_in, edge_params_in);
  const auto weights = grad_edge.to(loss_dtype(in.logits.scalar_type())).contiguous();
  auto grad = at::empty(in.logits.sizes(), in.logits.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.logits.scalar_type(),
                                  "gated_edge_loss_backward_cpu", [&] {
    run_rows<scalar_t>(in.logits, in.labels, in.edge_index, in.edge_params, progress, reduction,
                       &weights, nullptr, nullptr, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ktgfast, CPU, m) {
  m.impl("gated_edge_loss", &gated_edge_loss_cpu);
  m.impl("gated_edge_loss_backward", &gated_edge_loss_backward_cpu);
}

}  // namespace ktgfast
