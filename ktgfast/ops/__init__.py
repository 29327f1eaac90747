"""Typed wrappers of the compiled ops, with their fake (meta) kernels and
autograd.  One module per op; the C++ schemas live in ``csrc/*_schema.cpp``.

``import ktgfast.ops`` works without a built extension; calling an op then
raises one actionable error.
"""
from ._extension import BUILD_HINT, IMPORT_ERROR as _IMPORT_ERROR, _C, extension_available
from ._extension import require_extension as _require_extension
from .gated_edge_loss import EdgeLoss, _loss_dtype, gated_edge_loss
from .attention_crop import attention_crop_loss
from .pcgrad import PCGradResult, pcgrad, pcgrad_order

__all__ = ["BUILD_HINT", "EdgeLoss", "PCGradResult", "attention_crop_loss", "extension_available",
           "gated_edge_loss", "pcgrad", "pcgrad_order"]
