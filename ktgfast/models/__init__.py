"""Model registry: build any node's network by name.

>>> model = build_model("resnet32", num_classes=100)             # CIFAR-100 node
>>> model = build_model("wrn16_1", 10, in_channels=1, dropout=0.3)  # any WRN-d-k
>>> model = build_model("resnet18", 120, stem="large")           # 224 px images

Every model has ``forward_features(x) -> (N, num_features, H', W')`` (the last
residual block's output; the last conv block's for ``cnn_small``),
``forward_head(features) -> logits`` and ``forward = head ∘ features``, plus the
attribute ``num_features``.  ``forward_outputs(x) -> ModelOutputs(logits,
attention, aux_logits)`` gives, from one pass, the logits, the attention map an
attention edge compares (``(N, H, W)`` float32: the Attention Transfer map
``Σ_c A_c²`` of ``forward_features``, or ABN's attention-branch map) and the
logits of an auxiliary head with its own loss (ABN's attention branch; else
``None``).  ``crop_sizes`` holds the thesis's attention-crop sizes for the model.

Names (``list_models()``) and options (``MODEL_OPTIONS[name]``, or
``model_options(name)`` which also resolves templates):

=============================  ==============================================
``resnet20/32/56/110``         CIFAR ResNets, 6n+2; ``width`` (16), ``stem``
                               (``cifar`` | ``tiny`` | ``large``)
``wrn28_2/6/10``,              Wide ResNets; ``dropout`` (0), ``width`` (16),
``wrn{depth}_{widen}``         ``stem`` (``cifar`` | ``tiny`` | ``large``)
``resnet18``                   ImageNet ResNet-18; ``width`` (64), ``stem``
                               (``imagenet`` | ``cifar`` | ``tiny`` | ``large``)
``abn_resnet20/32/56/110``,    Attention Branch Networks on those ResNets
``abn_resnet18``               (no residual bypass); options as above;
                               :mod:`ktgfast.models.abn`
``cnn_small``                  2-conv CNN; ``pool`` (4)
``mlp``                        1 hidden layer; ``hidden`` (256), ``image_size`` (28)
=============================  ==============================================

Stems are described in :mod:`ktgfast.models.stems`.  New models register with
``@register_model(name, options={...})``.
"""
from .registry import MODEL_OPTIONS, Option, build_model, list_models, model_options, register_model
from .base import FeatureNet, ModelOutputs, attention_transfer_map

# Importing the families registers them.
from . import abn, resnet, small, wide_resnet  # noqa: E402,F401

__all__ = [
    "MODEL_OPTIONS",
    "FeatureNet",
    "ModelOutputs",
    "Option",
    "attention_transfer_map",
    "build_model",
    "list_models",
    "model_options",
    "register_model",
]
