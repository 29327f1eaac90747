// Build facts for `python -m ktgfast.info` (a non-tensor helper, so pybind11).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#ifndef KTGFAST_TORCH_VERSION
#define KTGFAST_TORCH_VERSION "unknown"
#endif
#ifndef KTGFAST_CUDA_ARCHS
#define KTGFAST_CUDA_ARCHS ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef KTGFAST_WITH_CUDA
  d["with_cuda"] = true;
#else
  d["with_cuda"] = false;
#endif
  d["cuda_archs"] = std::string(KTGFAST_CUDA_ARCHS);
#ifdef _OPENMP
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
#ifdef NDEBUG
  d["debug"] = false;
#else
  d["debug"] = true;
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  d["torch_version_built"] = std::string(KTGFAST_TORCH_VERSION);
  d["parallel_info"] = at::get_parallel_info();
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ktgfast compiled operators (registered under torch.ops.ktgfast)";
  m.def("build_info", &build_info, "How this extension was built");
}
