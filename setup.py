"""Build ktgfast and its compiled extension ktgfast._C.

The CUDA kernels are built when torch is a CUDA build, a CUDA toolkit (nvcc) is
found and a GPU is visible (torch.cuda.is_available()); FORCE_CUDA=1 builds them
without a GPU (CI, build hosts), KTGFAST_SKIP_CUDA=1 never does.

Environment knobs (all optional):
  FORCE_CUDA=1          build the CUDA kernels even without a visible GPU
  KTGFAST_SKIP_CUDA=1   CPU-only build, even where a GPU is visible
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;8.6;9.0+PTX")
  MAX_JOBS              parallel compile jobs (ninja)
  DEBUG=1               -O0 -g, asserts on
  CUDA_HOME             CUDA toolkit root; guessed from nvcc when unset
  KTGFAST_BUILD_DIR     the object folder (default: build/ext-<cpu|cuda>-<digest of
                        the configuration> in the source tree)

Objects are kept in a persistent, git-ignored folder per build configuration
(CPU-only or CUDA, architectures, debug, torch, Python, environment) that ninja
updates incrementally: a reinstall with unchanged sources compiles nothing and
only relinks, an edited source (or a header it includes) recompiles only what
depends on it, and a CPU-only build never links objects of a CUDA build or vice
versa (ninja also recompiles any object whose compile command changed).
`rm -rf build/` starts from scratch.

Install with torch already present: pip install --no-build-isolation -e .
(add -v to see the build log: configuration, build folder, objects reused).
"""
import glob
import hashlib
import os
import shutil
import sys
import sysconfig

from setuptools import find_packages, setup
from setuptools.command.egg_info import egg_info as _egg_info

try:
    from setuptools.command.build import build as _build
except ImportError:  # setuptools < 62.4
    from distutils.command.build import build as _build

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
    if not torch.cuda.is_available():
        return False, "no GPU visible; FORCE_CUDA=1 builds the kernels anyway"
    return True, "GPU visible, CUDA torch and nvcc present"


HERE = os.path.dirname(os.path.abspath(__file__))
WITH_CUDA, WHY_CUDA = _want_cuda()
DEBUG = _flag("DEBUG")
ARCHS = os.environ["TORCH_CUDA_ARCH_LIST"] if WITH_CUDA else ""


def _build_dir():
    """One persistent object folder per configuration: what changes the objects'
    flags or ABI is in its name, so configurations never share objects."""
    if os.environ.get("KTGFAST_BUILD_DIR"):
        return os.path.abspath(os.environ["KTGFAST_BUILD_DIR"])
    key = "|".join([
        "cuda" if WITH_CUDA else "cpu", ARCHS, str(DEBUG), torch.__version__,
        str(torch.version.cuda), str(CUDA_HOME if WITH_CUDA else ""),
        sysconfig.get_config_var("EXT_SUFFIX") or "", sys.version,
        sys.prefix,  # a venv adds its include folder to every compile command
    ])
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return os.path.join(HERE, "build", f"ext-{'cuda' if WITH_CUDA else 'cpu'}-{digest}")


BUILD_DIR = _build_dir()


def _objects(folder):
    found = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".o"):
                path = os.path.join(root, f)
                found[path] = os.stat(path).st_mtime_ns
    return found


class BuildExt(BuildExtension):
    """torch's BuildExtension (ninja) with its objects in BUILD_DIR instead of
    setuptools' temporary folder (an editable install builds in a fresh temporary
    folder each time), and a line saying which objects were reused."""

    def finalize_options(self):
        super().finalize_options()  # ninja: force=True, so ninja decides what is stale
        self.build_temp = BUILD_DIR

    def build_extension(self, ext):
        before = _objects(self.build_temp)
        super().build_extension(ext)
        after = _objects(self.build_temp)
        built = sorted(os.path.relpath(p, self.build_temp) for p, t in after.items()
                       if before.get(p) != t)
        print(
            f"ktgfast build: {len(after) - len(built)} of {len(after)} objects reused, "
            f"{len(built)} compiled{': ' + ', '.join(built) if built else ''} "
            f"(build folder {self.build_temp})",
            flush=True,
        )


class Build(_build):
    """A fresh build/lib.* for every wheel: setuptools keeps it between builds, so
    a module deleted from the tree would still ship.  (The compiled objects stay in
    BUILD_DIR; an editable install builds in a temporary folder anyway.)"""

    def run(self):
        lib = os.path.abspath(self.build_lib)
        if os.path.isdir(lib) and lib.startswith(os.path.join(HERE, "build", "lib")):
            shutil.rmtree(lib)
        super().run()


class EggInfo(_egg_info):
    """Forget the previous SOURCES.txt: without a version-control plugin setuptools
    merges it into the new one, so a file once packaged would stay packaged."""

    def run(self):
        manifest = os.path.join(self.egg_info, "SOURCES.txt")
        if os.path.exists(manifest):
            os.remove(manifest)
        super().run()


def extensions():
    with_cuda, why, debug, archs = WITH_CUDA, WHY_CUDA, DEBUG, ARCHS
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
        f"  build folder: {BUILD_DIR}\n"
        f"  sources: {', '.join(sources)}",
        flush=True,
    )
    return [ext_cls("ktgfast._C", sources, extra_compile_args=args, extra_link_args=["-fopenmp"])]


setup(
    packages=find_packages(include=["ktgfast", "ktgfast.*"]),
    ext_modules=extensions(),
    cmdclass={"build": Build, "build_ext": BuildExt, "egg_info": EggInfo},
)
