// Schemas of the attention-crop ops (thesis eqs. 4.8-4.9).  Kernels register
// themselves in csrc/cpu/attention_crop.cpp and csrc/cuda/attention_crop.cu;
// the fake (meta) kernels and autograd in ktgfast/ops/attention_crop.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ktgfast, m) {
  // All attention edges of a graph for one batch.  maps (M, B, H, W), logits
  // (M, B, C) (read by correct / threshold gates only), crop_sizes the square
  // crop sizes, reduction 0 mean / 1 sum over the batch, pull_norm 0 mean /
  // 1 sum over a crop's cells.  Returns (edge_loss (E,), node_loss (M,),
  // count (E,) int64, grad (M, B, H, W)) where grad is d(sum node_loss)/d(maps),
  // computed in the same pass as the loss.
  m.def(
      "attention_crop_loss(Tensor maps, Tensor logits, Tensor labels, Tensor edge_index, "
      "Tensor edge_params, Tensor progress, int[] crop_sizes, int reduction, int pull_norm) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // sum_e grad_edge[e] * d(edge_loss[e])/d(maps): the general backward, used
  // when upstream gradients differ between edges of one destination.
  m.def(
      "attention_crop_loss_backward(Tensor grad_edge, Tensor maps, Tensor logits, Tensor labels, "
      "Tensor edge_index, Tensor edge_params, Tensor progress, int[] crop_sizes, int reduction, "
      "int pull_norm) -> Tensor");
}
