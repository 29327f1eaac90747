// The ktgfast operator library and the gated edge-loss schemas.  Other ops add
// their schemas with TORCH_LIBRARY_FRAGMENT in csrc/<op>_schema.cpp.  Kernels
// register themselves in csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) kernels
// and autograd formulas are registered from Python in ktgfast/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(ktgfast, m) {
  // All edges of a knowledge-transfer graph for one batch.  Returns
  // (edge_loss (E,), node_loss (M,), count (E,) int64, grad (M, B, C)) where grad
  // is d(sum node_loss)/d(logits), computed in the same pass as the loss.
  m.def(
      "gated_edge_loss(Tensor logits, Tensor labels, Tensor edge_index, Tensor edge_params, "
      "Tensor progress, int reduction) -> (Tensor, Tensor, Tensor, Tensor)");
  // sum_e grad_edge[e] * d(edge_loss[e])/d(logits): the general backward, used
  // when upstream gradients differ between edges of one destination.
  m.def(
      "gated_edge_loss_backward(Tensor grad_edge, Tensor logits, Tensor labels, "
      "Tensor edge_index, Tensor edge_params, Tensor progress, int reduction) -> Tensor");
}
