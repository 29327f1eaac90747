"""A kind with its parameters: :class:`Gate` and :class:`CoefSchedule`, the one
shape parameters have from a graph file to the packed edge table.

Both are frozen values: ``Gate("sine", f=0.5, phi=4.71)``,
``CoefSchedule("ramp_sigmoid", length=0.3)``.  Their parameters are checked
against the table of kinds (``kinds.py``) by :meth:`~KindValue.problems`, which
graph validation and ``EdgeSpec.validate`` call; :meth:`~KindValue.parse`
reads the YAML form (``correct`` or ``{kind: sine, f: 0.5, phi: 4.71}``) and
is strict: a required parameter that is missing, an unknown one or a value of
the wrong type is an error naming the field.

A parameter a Python caller leaves out takes its default.  A gate equals the
name of its kind (``spec.gate == "cutoff"``, ``GATE_KINDS[spec.gate]``), so
code that only asks which kind it is reads as before; two gates are equal
when kind and parameters are.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, NamedTuple

from .kinds import GATES, SCHEDULES

NO_VALUE = object()  # a Problem about a missing field


class Problem(NamedTuple):
    """One thing wrong with a value: the field's path, its value (``NO_VALUE``
    when missing) and why it is not allowed."""

    path: str
    value: Any
    why: str

    def line(self, sep: str = ": ") -> str:
        """``path: value; why`` (``path: why`` when missing); ``sep`` joins
        path and value (``" = "`` in edge-table messages)."""
        if self.value is NO_VALUE:
            return f"{self.path}: {self.why}"
        return f"{self.path}{sep}{self.value!r}; {self.why}"


class KindValue:
    """A kind name plus its parameters (a tuple of ``(name, value)`` in the
    kind's order).  Subclasses name their table."""

    TABLE: ClassVar[dict]
    WHAT: ClassVar[str]
    DEFAULT: ClassVar[str]
    # Names accepted for every kind and dropped where the kind has no such
    # parameter (the flat gate fields of earlier versions: Gate("through",
    # tau=0.95) is the through gate).
    LEGACY: ClassVar[dict[str, float]] = {}

    def __init__(self, kind: str | None = None, /, **params: Any):
        if "kind" in params:  # Gate(kind="sine", ...)
            if kind is not None:
                raise TypeError(f"{type(self).__name__} got the kind twice")
            kind = params.pop("kind")
        kind = self.DEFAULT if kind is None else kind
        entry = self.TABLE.get(kind) if isinstance(kind, str) else None
        if entry is not None:
            names = entry.param_names
            given = {k: v for k, v in params.items() if k in names or k not in self.LEGACY}
            full = {p.name: given.pop(p.name, p.default) for p in entry.params}
            full.update(given)  # unknown names: kept for problems() to report
        else:
            full = dict(params)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "params", tuple(full.items()))

    @classmethod
    def _raw(cls, kind: str, params) -> "KindValue":
        out = object.__new__(cls)
        object.__setattr__(out, "kind", kind)
        object.__setattr__(out, "params", tuple(params))
        return out

    # -- value semantics ---------------------------------------------------
    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen; build a new one")

    def __reduce__(self):
        return (type(self)._raw, (self.kind, self.params))

    def __getattr__(self, name: str):
        # Only called when ordinary lookup fails: a parameter's name.
        if name in ("kind", "params") or name.startswith("__"):
            raise AttributeError(name)
        for k, v in self.__dict__.get("params", ()):
            if k == name:
                return v
        if name in self.LEGACY:
            return self.LEGACY[name]
        raise AttributeError(f"{type(self).__name__} {self.kind!r} has no parameter {name!r}")

    def __eq__(self, other):
        if isinstance(other, str):
            return self.kind == other
        if isinstance(other, type(self)):
            return self.kind == other.kind and self.params == other.params
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.kind)  # equal to its kind's name, so hashed like it

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params)
        return f"{type(self).__name__}({self.kind!r}{args})"

    def __str__(self) -> str:
        entry = self.TABLE.get(self.kind)
        return entry.describe(dict(self.params)) if entry is not None else str(self.kind)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def entry(self):
        """The kind's table entry (KeyError for an unknown kind)."""
        return self.TABLE[self.kind]

    # -- checks --------------------------------------------------------------
    def problems(self, where: str) -> list["Problem"]:
        """What is wrong (empty: valid).  ``where`` is the path of this value
        (``graph.edges[2].gate``); a parameter's path is ``where.NAME``."""
        entry = self.TABLE.get(self.kind) if isinstance(self.kind, str) else None
        if entry is None:
            return [Problem(where, NO_VALUE, f"unknown {self.WHAT} {self.kind!r}; allowed: "
                                             f"{', '.join(self.TABLE)}")]
        out = []
        for name, value in self.params:
            param = entry.param(name)
            if param is None:
                allowed = ", ".join(entry.param_names) or "none"
                out.append(Problem(f"{where}.{name}", value, f"the {self.kind} {self.WHAT} has no "
                                                             f"parameter {name!r}; allowed: {allowed}"))
            elif value is None:
                out.append(Problem(f"{where}.{name}", NO_VALUE,
                                   f"missing; the {self.kind} {self.WHAT} needs {name} ({param.doc})"))
            else:
                why = param.problem(value)
                if why is not None:
                    out.append(Problem(f"{where}.{name}", value, why))
        return out

    def check(self, where: str, error: type[Exception] = ValueError) -> "KindValue":
        """Raise ``error`` with the first problem (one line)."""
        found = self.problems(where)
        if found:
            raise error(found[0].line())
        return self

    # -- forms -----------------------------------------------------------------
    def canonical(self) -> "KindValue":
        """Floats, periodic parameters reduced; an unknown kind keeps none."""
        entry = self.TABLE.get(self.kind) if isinstance(self.kind, str) else None
        if entry is None:
            return self._raw(self.kind, ())
        return self._raw(self.kind, tuple((p.name, p.canonical(getattr(self, p.name)))
                                          for p in entry.params))

    def to_data(self, minimal: bool = False) -> str | dict:
        """The YAML form: the kind's name when nothing needs writing, else a
        mapping.  It writes the required parameters and those that differ from
        their default; ``minimal`` only the latter (the form graph identities
        are computed from, unchanged since gates had flat fields)."""
        entry = self.TABLE.get(self.kind) if isinstance(self.kind, str) else None
        if entry is None:
            return self.kind
        write = {p.name: getattr(self, p.name) for p in entry.params
                 if getattr(self, p.name) != p.default or (p.required and not minimal)}
        return {"kind": self.kind, **write} if write else self.kind

    @classmethod
    def parse(cls, value: Any, where: str, error: type[Exception] = ValueError) -> "KindValue":
        """From YAML: a name or ``{kind: NAME, PARAM: VALUE, ...}``; every
        problem is one line naming its field."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            raise error(f"{where}: expected a {cls.WHAT} name or a mapping with kind, got {value!r}")
        kind = value.get("kind", cls.DEFAULT)
        if not isinstance(kind, str) or kind not in cls.TABLE:
            raise error(f"{where}.kind: unknown {cls.WHAT} {kind!r}; allowed: {', '.join(cls.TABLE)}")
        entry = cls.TABLE[kind]
        for k in value:
            if k != "kind" and entry.param(k) is None:
                allowed = ", ".join(("kind", *entry.param_names))
                raise error(f"{where}: unknown key {k!r} for the {kind} {cls.WHAT}; allowed: {allowed}")
        params = {}
        for p in entry.params:
            if p.name not in value:
                if p.required or p.default is None:
                    needs = " and ".join(q.name for q in entry.params if q.required or q.default is None)
                    raise error(f"{where}.{p.name}: missing; the {kind} {cls.WHAT} needs {needs} "
                                f"({p.name}: {p.doc})")
                continue
            why = p.problem(value[p.name])
            if why is not None:
                raise error(f"{where}.{p.name}: {value[p.name]!r}; {why}")
            params[p.name] = float(value[p.name])
        return cls(kind, **params)


class Gate(KindValue):
    """Per-sample weight of an edge: a gate kind of :data:`~ktgfast.edges.kinds.GATES`
    with its parameters (``sine``: ``f``, ``phi``; ``threshold``: ``tau``)."""

    TABLE = GATES
    WHAT = "gate"
    DEFAULT = "through"
    LEGACY = {p.name: p.default for g in GATES.values() for p in g.params}

    def pack(self) -> tuple[float, float]:
        """``(gate_a, gate_b)``: the kernel's parameter columns."""
        cols = {"gate_a": 0.0, "gate_b": 0.0}
        values = dict(self.params)
        for p in self.TABLE[self.kind].params:
            cols[p.column] = float(values[p.name])
        return cols["gate_a"], cols["gate_b"]


class CoefSchedule(KindValue):
    """A per-step factor on an edge's coefficient: a schedule of
    :data:`~ktgfast.edges.kinds.SCHEDULES` (``ramp_linear`` and
    ``ramp_sigmoid`` take ``length``, a fraction of training in (0, 1])."""

    TABLE = SCHEDULES
    WHAT = "coefficient schedule"
    DEFAULT = "none"

    @classmethod
    def of(cls, value: Any) -> "CoefSchedule":
        """From a schedule, a name, a mapping ``{kind, length}`` or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            value = dict(value)
            return cls(value.pop("kind", cls.DEFAULT), **value)
        raise TypeError(f"coef_schedule: expected a schedule name, a mapping or a CoefSchedule, "
                        f"got {value!r}")


__all__ = ["NO_VALUE", "CoefSchedule", "Gate", "KindValue", "Problem"]
