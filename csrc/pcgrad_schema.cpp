// Schema of ktgfast::pcgrad (kernels in csrc/cpu/pcgrad.cpp and
// csrc/cuda/pcgrad.cu; the fake kernel in ktgfast/ops/pcgrad.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ktgfast, m) {
  // PCGrad (Yu et al. 2020, Alg. 1) of K gradients sharing parameters.
  // grads[t] is (K, *shape_t): task k's gradient of parameter t is grads[t][k].
  // order (K, K-1) int64: row i the other tasks in the order task i is
  // projected against them.  reduction: 0 sum, 1 mean of the projected
  // gradients.  Returns (update, one (*shape_t) tensor per parameter;
  // conflicts (K, K) int64, 1 where the original g_i . g_j < 0).  Not
  // differentiable (no autograd formula is registered).
  m.def("pcgrad(Tensor[] grads, Tensor order, int reduction) -> (Tensor[], Tensor)");
}
