"""``python -m ktgfast.info``: what this ktgfast installation can do."""
from __future__ import annotations

import importlib.util
import platform
import sys

import torch

OPS = ("gated_edge_loss", "gated_edge_loss_backward", "attention_crop_loss", "attention_crop_loss_backward",
       "pcgrad")


def _dali_version() -> str:
    if importlib.util.find_spec("nvidia.dali") is None:
        return "not installed (pip install nvidia-dali-cuda130)"
    try:
        import nvidia.dali as dali

        return dali.__version__
    except Exception as exc:  # noqa: BLE001 - report whatever breaks the import
        return f"installed but fails to import: {exc}"


def collect() -> dict:
    from . import __version__, ops

    info: dict = {
        "ktgfast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU build)",
        "GPUs visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch threads": torch.get_num_threads(),
        "DALI": _dali_version(),
        "extension": "built" if ops.extension_available() else f"NOT BUILT ({ops._IMPORT_ERROR})",
    }
    if ops.extension_available():
        build = ops._C.build_info()
        info.update(
            {
                "built against torch": build["torch_version_built"],
                "CUDA kernels compiled": build["with_cuda"],
                "CUDA archs": build["cuda_archs"] or "-",
                "OpenMP": build["openmp"],
                "debug build": build["debug"],
                "compiler": build["compiler"],
            }
        )
        for op in OPS:
            name = f"ktgfast::{op}"
            kernels = [
                key
                for key in ("CPU", "CUDA")
                if torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
            ]
            info[f"op {op}"] = ", ".join(kernels) or "no kernels"
    return info


def main() -> None:
    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    print()
    print(torch.__config__.parallel_info().strip())


if __name__ == "__main__":
    main()
