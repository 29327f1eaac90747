// The lane policy of the CUDA kernels: the 32 lanes of a warp, reductions by
// butterfly shuffles (every lane ends with the result).  The CPU runs the same
// row math with SerialLanes (csrc/common/gated_edge_loss.h).
#pragma once

#include <cstdint>

#include "../common/gated_edge_loss.h"

namespace ktgfast {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;

// The 32 lanes of a warp; reductions by butterfly shuffles (every lane ends with
// the result).
struct WarpLanes {
  static constexpr int kStride = kWarp;
  int lane_;
  KTG_HD int lane() const { return lane_; }
  template <typename T>
  KTG_HD T sum(T v) const {
#if defined(__CUDA_ARCH__)
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
#endif
    return v;
  }
  KTG_HD bool owns(int64_t c) const { return c % kWarp == lane_; }
  template <typename T>
  KTG_HD T max(T v) const {
#if defined(__CUDA_ARCH__)
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const T ov = __shfl_xor_sync(0xffffffffu, v, o);
      v = ov > v ? ov : v;
    }
#endif
    return v;
  }
  template <typename T>
  KTG_HD void argmax(T& v, int64_t& i) const {
#if defined(__CUDA_ARCH__)
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const T ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, i, o);
      if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
      }
    }
#endif
  }
};

}  // namespace ktgfast
