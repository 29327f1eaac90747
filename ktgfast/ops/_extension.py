"""Loading of the compiled extension ``ktgfast._C``.

``import ktgfast.ops`` works without a built extension; calling an op then
raises one actionable error (the underlying import error included).
"""
from __future__ import annotations

try:
    from .. import _C  # noqa: F401  (importing registers torch.ops.ktgfast.*)

    IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    _C = None
    IMPORT_ERROR = exc

BUILD_HINT = (
    "ktgfast's compiled extension (ktgfast._C) is not built or failed to load: {err}\n"
    "Build it in the source folder with torch already installed:\n"
    "    pip install --no-build-isolation -e .\n"
    "(set KTGFAST_SKIP_CUDA=1 for a CPU-only build; `python -m ktgfast.info` shows the build)."
)


def extension_available() -> bool:
    return _C is not None


def require_extension() -> None:
    if _C is None:
        raise RuntimeError(BUILD_HINT.format(err=IMPORT_ERROR))
