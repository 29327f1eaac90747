"""The model registry: names -> factories, with declared, validated options.

A factory is registered under a name together with the options it accepts
(:class:`Option`: default, meaning, allowed values).  ``build_model`` checks
every argument *before* building, so a typo in a config (``widht=8``) fails at
once with the allowed options listed, instead of deep inside a constructor.

A name may be a template with integer fields, e.g. ``"wrn{depth}_{widen}"``:
``build_model("wrn16_1", ...)`` then calls the factory with ``depth=16,
widen=1``.  The factory validates the field values (it knows what is legal);
its ValueError is re-raised with the model name in front.
Exact names win over templates, so ``wrn28_2`` may be both listed and matched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

__all__ = [
    "MODEL_OPTIONS",
    "ModelEntry",
    "Option",
    "build_model",
    "list_models",
    "model_options",
    "register_model",
]


@dataclass(frozen=True)
class Option:
    """One keyword option of a model.

    The value's kind follows the default's: an ``int`` default takes ints only
    (not bools, not floats: a width of 1.5 is a bug, not a request); a ``float``
    default takes ints and floats; a ``str`` default takes one of ``choices``.
    ``minimum`` is inclusive, ``below`` exclusive.
    """

    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    below: float | None = None

    def describe(self) -> str:
        if self.choices is not None:
            allowed = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            allowed = "an int" if isinstance(self.default, int) else "a number"
            if self.minimum is not None and self.below is not None:
                allowed += f" in [{self.minimum}, {self.below})"
            elif self.minimum is not None:
                allowed += f" >= {self.minimum}"
            elif self.below is not None:
                allowed += f" < {self.below}"
        return f"{self.doc} ({allowed}, default {self.default!r})"

    def check(self, model: str, name: str, value: Any) -> Any:
        """The validated (and for floats, converted) value, or ValueError."""
        ok = True
        if self.choices is not None:
            ok = isinstance(value, str) and value in self.choices
        elif isinstance(self.default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        if ok and self.minimum is not None:
            ok = value >= self.minimum
        if ok and self.below is not None:
            ok = value < self.below
        if not ok:
            raise ValueError(
                f"model {model!r}: invalid value {value!r} for option {name!r}; "
                f"allowed: {self.describe()}"
            )
        return value


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    options: Mapping[str, Option]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    pattern: re.Pattern | None = None  # set for template names


_ENTRIES: dict[str, ModelEntry] = {}
_OPTIONS: dict[str, Mapping[str, Option]] = {}

# Read-only view: registered name (templates included) -> its options.
MODEL_OPTIONS: Mapping[str, Mapping[str, Option]] = MappingProxyType(_OPTIONS)

_FIELD = re.compile(r"\{(\w+)\}")


def _template_pattern(name: str) -> re.Pattern | None:
    if "{" not in name:
        return None
    parts = _FIELD.split(name)  # literal, field, literal, field, ...
    regex = "".join(
        re.escape(p) if i % 2 == 0 else f"(?P<{p}>[0-9]+)" for i, p in enumerate(parts)
    )
    return re.compile(regex + r"\Z")


def register_model(name: str, *, options: Mapping[str, Option] | None = None, **fixed: Any):
    """Decorator: register ``factory(num_classes, in_channels, **fixed, **fields,
    **options)`` under ``name``.  ``fixed`` binds constructor arguments, so one
    factory can serve a family (``register_model("resnet20", depth=20)``).
    Returns the factory unchanged, so registrations can be stacked."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} is already registered")
        opts = MappingProxyType(dict(options or {}))
        _ENTRIES[name] = ModelEntry(name, factory, opts, MappingProxyType(dict(fixed)),
                                    _template_pattern(name))
        _OPTIONS[name] = opts
        return factory

    return decorator


def list_models() -> list[str]:
    """The buildable concrete names, sorted (templates are not listed; see
    ``MODEL_OPTIONS`` for them)."""
    return sorted(n for n, e in _ENTRIES.items() if e.pattern is None)


def _resolve(name: str) -> tuple[ModelEntry, dict[str, int]]:
    entry = _ENTRIES.get(name)
    if entry is not None and entry.pattern is None:
        return entry, {}
    for entry in _ENTRIES.values():
        match = entry.pattern.match(name) if entry.pattern is not None else None
        if match:
            return entry, {k: int(v) for k, v in match.groupdict().items()}
    templates = [n for n, e in _ENTRIES.items() if e.pattern is not None]
    raise ValueError(
        f"unknown model {name!r}; allowed: {', '.join(list_models())}"
        + (f"; or a template: {', '.join(templates)}" if templates else "")
    )


def model_options(name: str) -> Mapping[str, Option]:
    """The options ``name`` accepts (templates resolved)."""
    return _resolve(name)[0].options


def _check_count(what: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")


def build_model(name: str, num_classes: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build the registered model ``name``; every argument is validated first.

    Raises ``ValueError`` naming the bad value and what is allowed, for an
    unknown name, an unknown option, an invalid option value, or
    ``num_classes`` / ``in_channels`` < 1.
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    entry, fields = _resolve(name)
    _check_count("num_classes", num_classes)
    _check_count("in_channels", in_channels)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        allowed = "; ".join(f"{k!r}: {o.describe()}" for k, o in entry.options.items())
        raise ValueError(
            f"model {name!r}: unknown option(s) {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {allowed or 'none'}"
        )
    kwargs = {k: o.default for k, o in entry.options.items()}
    kwargs.update({k: entry.options[k].check(name, k, v) for k, v in options.items()})
    try:
        return entry.factory(num_classes=num_classes, in_channels=in_channels,
                             **entry.fixed, **fields, **kwargs)
    except ValueError as exc:  # e.g. an illegal template field: say which name
        raise ValueError(f"model {name!r}: {exc}") from exc
