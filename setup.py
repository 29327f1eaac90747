"""Build ktgfast and its compiled extension ktgfast._C.

Environment knobs (all optional):
  FORCE_CUDA=1          build the CUDA kernels even without a visible GPU
  KTGFAST_SKIP_CUDA=1   CPU-only build, even where CUDA is available
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;8.6;9.0+PTX")
  MAX_JOBS              parallel compile jobs (ninja)
  DEBUG=1               -O0 -g, asserts on
  CUDA_HOME             CUDA toolkit root; guessed from nvcc when unset

Install with torch already present: pip install --no-build-isolation -e .
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

DEFAULT_ARCHS = "8.0;8.6;9.0+PTX"


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _guess_cuda_home():
    """Where nvcc sits in <prefix>/bin while the toolkit is <prefix>/cuda, torch's
    own guess (<prefix>) has no libcudart: prefer a folder that does."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return
    guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    for root in (os.path.join(os.path.dirname(os.path.dirname(nvcc)), "cuda"), guess):
        if os.path.exists(os.path.join(root, "lib64", "libcudart.so")):
            os.environ["CUDA_HOME"] = root
            return


_guess_cuda_home()
if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS

import torch  # noqa: E402  (CUDA_HOME must be settled before cpp_extension reads it)
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda():
    if _flag("KTGFAST_SKIP_CUDA"):
        return False, "KTGFAST_SKIP_CUDA=1"
    if _flag("FORCE_CUDA"):
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit (nvcc) found"
    return True, "CUDA torch and nvcc present"


def extensions():
    with_cuda, why = _want_cuda()
    debug = _flag("DEBUG")
    archs = os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else ""
    opt = ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG"]
    defines = [
        f'-DKTGFAST_TORCH_VERSION="{torch.__version__}"',
        f'-DKTGFAST_CUDA_ARCHS="{archs}"',
    ]
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -fno-trapping-math lets gcc if-convert (and so vectorise) the float selects
    # of the class loops; nothing here relies on floating-point traps.
    cxx = opt + defines + ["-fopenmp", "-fno-trapping-math"]
    args = {"cxx": cxx}
    ext_cls = CppExtension
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        args["cxx"] = cxx + ["-DKTGFAST_WITH_CUDA"]
        args["nvcc"] = opt + defines + ["-DKTGFAST_WITH_CUDA", "-lineinfo"]
        ext_cls = CUDAExtension
    print(
        "ktgfast build configuration:\n"
        f"  torch {torch.__version__} (CUDA {torch.version.cuda})\n"
        f"  CUDA kernels: {'yes' if with_cuda else 'no'} ({why})\n"
        f"  CUDA_HOME: {CUDA_HOME}\n"
        f"  TORCH_CUDA_ARCH_LIST: {archs or '-'}\n"
        f"  MAX_JOBS: {os.environ.get('MAX_JOBS', 'auto')}\n"
        f"  debug: {debug}\n"
        f"  sources: {', '.join(sources)}",
        flush=True,
    )
    return [ext_cls("ktgfast._C", sources, extra_compile_args=args, extra_link_args=["-fopenmp"])]


setup(
    packages=find_packages(include=["ktgfast", "ktgfast.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
