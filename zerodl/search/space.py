"""Search spaces: parsed from ``name=spec`` strings or a TOML file, validated up front.

Forms of a spec (the command line and TOML strings use the same text)::

    lr=log:1e-6:1e-2          log-uniform float in [1e-6, 1e-2] (the book's method)
    dropout=float:0:0.5       uniform float
    layers=int:2:6            integer (optional step: int:50:200:50)
    units=logint:32:512       integer, uniform on a log scale
    optimizer=choice:sgd,adam one of the listed values
    units=100                 a fixed value

In TOML, a value may also be a number or boolean (fixed), a list (choice) or a table
``{type = "log", low = 1e-6, high = 1e-2}``; the parameters live in a ``[space]`` table
(or at the top level of the file).

Only this module's :data:`PARAMETERS` can be searched; parameters left out keep the
book's defaults (6 hidden layers of 100 ReLU units, He init, SGD with lr 0.01, batch 100).
Nothing here imports Optuna, so a space can be checked without it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from .errors import SearchSpaceError

__all__ = ["SearchSpace", "Dimension", "SearchSpaceError", "PARAMETERS", "BOOK_SPACE"]

KINDS = ("log", "float", "int", "logint", "choice", "fixed")

# name -> (value type, help).  Value types: "float", "int", "str", "bool", "init".
PARAMETERS: dict[str, tuple[str, str]] = {
    "lr": ("float", "learning rate (> 0)"),
    "weight_decay": ("float", "L2 weight decay lambda (>= 0)"),
    "l1": ("float", "L1 weight decay lambda (>= 0)"),
    "dropout": ("float", "dropout ratio after each hidden activation (0 <= p < 1; 0: off)"),
    "layers": ("int", "number of hidden layers (>= 1)"),
    "units": ("int", "units per hidden layer (>= 1)"),
    "batch_size": ("int", "mini-batch size (>= 1)"),
    "optimizer": ("str", "sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw"),
    "activation": ("str", "relu, sigmoid or tanh"),
    "init": ("init", "weight init: he, xavier, or a std (> 0)"),
    "batchnorm": ("bool", "BatchNorm before each activation (true/false)"),
}

DEFAULTS = {"lr": 0.01, "weight_decay": 0.0, "l1": 0.0, "dropout": 0.0, "layers": 6,
            "units": 100, "batch_size": 100, "optimizer": "sgd", "activation": "relu",
            "init": "he", "batchnorm": False}

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
INIT_NAMES = ("he", "relu", "xavier", "sigmoid")

# The book's ch06/hyperparameter_optimization.py searches these two.
BOOK_SPACE = ("lr=log:1e-6:1e-2", "weight_decay=log:1e-8:1e-4")

_FORMS = ("log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH[:STEP], logint:LOW:HIGH, "
          "choice:A,B,... or a fixed value")


def _num(text: str) -> str:
    """A compact, exact text form of a number (round-trips through float())."""
    if isinstance(text, bool):
        return "true" if text else "false"
    if isinstance(text, int):
        return str(text)
    r = repr(float(text))
    g = f"{float(text):g}"
    return g if float(g) == float(text) else r


def _check_value(name: str, value):
    """Validate one value of parameter ``name``; returns it normalised."""
    vtype = PARAMETERS[name][0]
    bad = SearchSpaceError
    if vtype == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"{name}: expected a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise bad(f"{name}: {value!r} is not a finite number")
        if name == "lr" and v <= 0:
            raise bad(f"lr must be > 0, got {value!r}")
        if name in ("weight_decay", "l1") and v < 0:
            raise bad(f"{name} must be >= 0, got {value!r}")
        if name == "dropout" and not 0.0 <= v < 1.0:
            raise bad(f"dropout must be in [0, 1), got {value!r}")
        return v
    if vtype == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                float(value) != int(value):
            raise bad(f"{name}: expected an integer, got {value!r}")
        v = int(value)
        if v < 1:
            raise bad(f"{name} must be >= 1, got {value!r}")
        return v
    if vtype == "bool":
        if not isinstance(value, bool):
            raise bad(f"{name}: expected true or false, got {value!r}")
        return value
    if vtype == "str":
        allowed = OPTIMIZER_NAMES if name == "optimizer" else ACTIVATIONS
        if not isinstance(value, str) or value.lower() not in allowed:
            raise bad(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return value.lower()
    # init: a name or a positive std
    if isinstance(value, str):
        if value.lower() in INIT_NAMES:
            return value.lower()
        raise bad(f"init: {value!r} is not he, relu, xavier, sigmoid or a number > 0")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise bad(f"init: expected he, xavier or a std > 0, got {value!r}")
    return float(value)


def _parse_scalar(name: str, text: str):
    """Text from the command line (or a TOML string) -> a value of ``name``'s type."""
    vtype = PARAMETERS[name][0]
    t = text.strip()
    if not t:
        raise SearchSpaceError(f"{name}: empty value")
    if vtype == "bool":
        low = t.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise SearchSpaceError(f"{name}: expected true or false, got {text!r}")
    if vtype in ("float", "int"):
        try:
            v = float(t)
        except ValueError:
            raise SearchSpaceError(f"{name}: {text!r} is not a number") from None
        if vtype == "int":
            if not math.isfinite(v) or v != int(v):
                raise SearchSpaceError(f"{name}: {text!r} is not an integer")
            return int(v)
        return v
    if vtype == "init":
        try:
            return float(t)
        except ValueError:
            return t
    return t


@dataclass(frozen=True)
class Dimension:
    """One searched (or fixed) parameter."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple = ()
    value: object = None

    # -- construction
    @classmethod
    def build(cls, name, kind, low=None, high=None, step=None, choices=(), value=None):
        if name not in PARAMETERS:
            raise SearchSpaceError(
                f"unknown parameter {name!r}; searchable parameters: "
                f"{', '.join(PARAMETERS)}")
        vtype = PARAMETERS[name][0]
        if kind not in KINDS:
            raise SearchSpaceError(f"{name}: unknown range type {kind!r}; use {_FORMS}")
        if kind == "fixed":
            return cls(name, kind, value=_check_value(name, value))
        if kind == "choice":
            if not choices:
                raise SearchSpaceError(f"{name}: choice needs at least one value")
            vals = tuple(_check_value(name, c) for c in choices)
            if len(set(map(repr, vals))) != len(vals):
                raise SearchSpaceError(f"{name}: repeated values in choice:{vals}")
            return cls(name, kind, choices=vals)
        if vtype in ("str", "bool", "init"):
            raise SearchSpaceError(f"{name} takes choice:A,B,... or a fixed value, not {kind}:")
        if kind in ("int", "logint") and vtype != "int":
            raise SearchSpaceError(f"{name} is a real number: use log:LOW:HIGH or "
                                   f"float:LOW:HIGH, not {kind}:")
        if kind in ("log", "float") and vtype != "float":
            raise SearchSpaceError(f"{name} is an integer: use int:LOW:HIGH or "
                                   f"logint:LOW:HIGH, not {kind}:")
        if low is None or high is None:
            raise SearchSpaceError(f"{name}: {kind} needs LOW and HIGH")
        if kind in ("log", "logint") and isinstance(low, (int, float)) and low <= 0:
            raise SearchSpaceError(f"{name}: a log range needs LOW > 0, got {_num(low)} "
                                   f"(use float:0:{_num(high)} to include 0)"
                                   if kind == "log" else
                                   f"{name}: a logint range needs LOW >= 1, got {_num(low)}")
        lo, hi = _check_value(name, low), _check_value(name, high)
        if lo > hi or (lo == hi and kind in ("log", "float")):
            raise SearchSpaceError(f"{name}: LOW must be below HIGH, got {kind}:"
                                   f"{_num(lo)}:{_num(hi)}")
        if kind == "log" and lo <= 0:
            raise SearchSpaceError(f"{name}: a log range needs LOW > 0, got {_num(lo)} "
                                   f"(use float:0:{_num(hi)} to include 0)")
        if step is not None:
            if kind != "int":
                raise SearchSpaceError(f"{name}: only int ranges take a step")
            if isinstance(step, bool) or not float(step).is_integer() or int(step) < 1:
                raise SearchSpaceError(f"{name}: step must be a positive integer, got {step!r}")
            step = int(step)
            if (hi - lo) % step:
                raise SearchSpaceError(f"{name}: HIGH - LOW ({hi - lo}) is not a multiple "
                                       f"of the step {step}")
            if step == 1:
                step = None
        return cls(name, kind, lo, hi, step)

    @classmethod
    def parse(cls, name: str, spec: str) -> "Dimension":
        name = name.strip()
        if name not in PARAMETERS:
            raise SearchSpaceError(
                f"unknown parameter {name!r}; searchable parameters: "
                f"{', '.join(PARAMETERS)}")
        spec = spec.strip()
        kind, sep, rest = spec.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in KINDS:
            if kind in KINDS and not sep:
                raise SearchSpaceError(f"{name}={spec}: {kind} needs arguments; use {_FORMS}")
            if ":" in spec and PARAMETERS[name][0] not in ("str", "init"):
                raise SearchSpaceError(f"{name}={spec}: unknown range type {kind!r}; "
                                       f"use {_FORMS}")
            return cls.build(name, "fixed", value=_parse_scalar(name, spec))
        if kind == "choice":
            items = [c for c in rest.split(",")]
            if any(not c.strip() for c in items):
                raise SearchSpaceError(f"{name}={spec}: empty value in the choice list")
            return cls.build(name, "choice", choices=[_parse_scalar(name, c) for c in items])
        if kind == "fixed":
            return cls.build(name, "fixed", value=_parse_scalar(name, rest))
        parts = rest.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and kind != "int"):
            raise SearchSpaceError(f"{name}={spec}: expected {kind}:LOW:HIGH"
                                   + ("[:STEP]" if kind == "int" else ""))
        low, high = (_parse_scalar(name, p) for p in parts[:2])
        step = None
        if len(parts) == 3:
            try:
                step = float(parts[2])
            except ValueError:
                raise SearchSpaceError(f"{name}={spec}: step {parts[2]!r} is not a number") \
                    from None
        return cls.build(name, kind, low, high, step)

    @classmethod
    def from_toml_value(cls, name: str, value) -> "Dimension":
        if isinstance(value, str):
            return cls.parse(name, value)
        if isinstance(value, list):
            return cls.build(name, "choice", choices=value)
        if isinstance(value, dict):
            d = dict(value)
            kind = str(d.pop("type", d.pop("kind", ""))).lower()
            if kind == "choice":
                choices = d.pop("choices", d.pop("values", None))
                if not isinstance(choices, list):
                    raise SearchSpaceError(f"{name}: a choice table needs choices = [...]")
                extra = d
                dim = cls.build(name, "choice", choices=choices)
            elif kind == "fixed":
                if "value" not in d:
                    raise SearchSpaceError(f"{name}: a fixed table needs value = ...")
                dim = cls.build(name, "fixed", value=d.pop("value"))
                extra = d
            else:
                if not kind:
                    raise SearchSpaceError(f"{name}: the table needs type = "
                                           f"\"log\"|\"float\"|\"int\"|\"logint\"|\"choice\"")
                dim = cls.build(name, kind, d.pop("low", None), d.pop("high", None),
                                d.pop("step", None))
                extra = d
            if extra:
                raise SearchSpaceError(f"{name}: unknown keys {sorted(extra)} in its table")
            return dim
        return cls.build(name, "fixed", value=value)

    # -- queries
    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and not (self.kind == "choice" and len(self.choices) == 1)

    @property
    def numeric(self) -> bool:
        return self.kind in ("log", "float", "int", "logint")

    @property
    def log(self) -> bool:
        return self.kind in ("log", "logint")

    def spec(self, short: bool = False) -> str:
        """The command-line form, e.g. ``log:1e-06:0.01`` (``short``: 3 significant
        digits, for display)."""
        num = (lambda v: f"{v:.3g}" if isinstance(v, float) else _num(v)) if short else _num
        if self.kind == "fixed":
            return num(self.value) if not isinstance(self.value, str) else self.value
        if self.kind == "choice":
            return "choice:" + ",".join(c if isinstance(c, str) else num(c)
                                        for c in self.choices)
        s = f"{self.kind}:{num(self.low)}:{num(self.high)}"
        return s + (f":{self.step}" if self.step else "")

    def to_dict(self) -> dict:
        d = {"type": self.kind}
        if self.kind == "fixed":
            d["value"] = self.value
        elif self.kind == "choice":
            d["choices"] = list(self.choices)
        else:
            d["low"], d["high"] = self.low, self.high
            if self.step:
                d["step"] = self.step
        return d

    def contains(self, value) -> bool:
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high

    def distribution(self):
        """The Optuna distribution (imports Optuna)."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)
        if self.kind == "log":
            return FloatDistribution(self.low, self.high, log=True)
        if self.kind == "float":
            return FloatDistribution(self.low, self.high)
        if self.kind == "int":
            return IntDistribution(self.low, self.high, step=self.step or 1)
        if self.kind == "logint":
            return IntDistribution(self.low, self.high, log=True)
        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        raise ValueError(f"{self.name} is fixed")

    # -- narrowing
    def narrowed(self, values) -> "Dimension":
        """The smallest range of the same kind holding ``values`` (the best trials')."""
        values = [v for v in values if v is not None]
        if not values or not self.searched:
            return self
        if self.kind == "choice":
            kept = tuple(c for c in self.choices if c in values)
            return Dimension(self.name, "choice", choices=kept)
        lo, hi = min(values), max(values)
        if self.kind in ("int", "logint"):
            lo, hi = int(lo), int(hi)
        return Dimension(self.name, self.kind, lo, hi, self.step if lo != hi else None)

    def widened(self, margin: float = 0.25, within: "Dimension | None" = None) -> "Dimension":
        """This range widened by ``margin`` of its span on each side (on a log scale for
        log ranges; at least a quarter decade / one step; a range of one value grows by
        ``margin`` of the span of ``within``, the range it was narrowed from), clipped to
        valid values only - so best values at an edge of the old range push past it."""
        if self.kind in ("choice", "fixed"):
            return self
        name = self.name
        if self.kind in ("log", "logint"):
            a, b = math.log10(self.low), math.log10(self.high)
            pad = max(margin * (b - a), 0.25)
            lo, hi = 10 ** (a - pad), 10 ** (b + pad)
        else:
            span = self.high - self.low
            outer = (within.high - within.low) if within is not None and within.numeric else 0
            # at least a tenth of the searched span: a few best values are no certainty
            pad = max(margin * span, 0.1 * outer) or abs(self.low) * margin
            lo, hi = self.low - pad, self.high + pad
        if self.kind == "logint":
            lo, hi = max(1, int(math.floor(lo))), int(math.ceil(hi))
            return Dimension(name, "logint", lo, max(hi, lo + 1))
        if self.kind == "int":
            step = self.step or 1
            outer = (within.high - within.low) if within is not None and within.numeric else 0
            pad = max(1, math.ceil(max((self.high - self.low) * margin, 0.1 * outer)
                                   / step)) * step
            lo, hi = self.low - pad, self.high + pad
            if lo < 1:
                lo = self.low - step * ((self.low - 1) // step)
            return Dimension(name, "int", lo, hi, self.step)
        # floats: round to 2 significant digits outward, clip to validity
        lo, hi = _round_down(lo), _round_up(hi)
        if name in ("weight_decay", "l1") and self.kind == "float":
            lo = max(lo, 0.0)
        if name == "dropout":
            lo, hi = max(lo, 0.0), min(hi, 0.9)
        if self.kind == "log":
            lo = max(lo, 1e-300)
        if hi <= lo:
            hi = lo * 10 if self.kind == "log" else lo + 1e-3
        return Dimension(name, self.kind, lo, hi)

    def edges(self, values) -> list[str]:
        """Which edges of this range the given values crowd (within 5% of the span)."""
        if not self.numeric or not values:
            return []
        f = (lambda x: math.log10(x)) if self.log else (lambda x: float(x))
        a, b = f(self.low), f(self.high)
        span = b - a
        if span <= 0:
            return []
        out = []
        if min(f(v) for v in values) - a <= 0.05 * span:
            out.append("lower")
        if b - max(f(v) for v in values) <= 0.05 * span:
            out.append("upper")
        return out if len(out) == 1 else []  # both: the range was not narrowed at all


def _round_sig(x: float, up: bool) -> float:
    """``x`` rounded to two significant digits, up or down."""
    if x == 0:
        return 0.0
    e = math.floor(math.log10(abs(x))) - 1
    q = x / 10.0 ** e
    q = math.ceil(q - 1e-9) if up else math.floor(q + 1e-9)
    return float(f"{q * 10.0 ** e:.12g}")


def _round_down(x: float) -> float:
    return _round_sig(x, up=False)


def _round_up(x: float) -> float:
    return _round_sig(x, up=True)


@dataclass
class SearchSpace:
    """An ordered set of :class:`Dimension` (at least one searched)."""

    dims: dict[str, Dimension] = field(default_factory=dict)

    # -- parsing
    @classmethod
    def parse(cls, specs, base: "SearchSpace | None" = None) -> "SearchSpace":
        """From ``"lr=log:1e-6:1e-2 layers=int:2:6"`` or a list of ``name=spec`` strings;
        entries override those of ``base``."""
        if isinstance(specs, str):
            specs = specs.split()
        dims = dict(base.dims) if base else {}
        seen = set()
        for item in specs:
            if not isinstance(item, str) or "=" not in item:
                raise SearchSpaceError(f"{item!r}: expected NAME=SPEC, e.g. lr=log:1e-6:1e-2")
            name, _, spec = item.partition("=")
            name = name.strip()
            if name in seen:
                raise SearchSpaceError(f"{name} is given twice")
            seen.add(name)
            dims[name] = Dimension.parse(name, spec)
        return cls(dims)._checked()

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        if not isinstance(data, dict):
            raise SearchSpaceError(f"a search space must be a table, got {type(data).__name__}")
        return cls({str(k): Dimension.from_toml_value(str(k), v)
                    for k, v in data.items()})._checked()

    @classmethod
    def from_toml(cls, path, base: "SearchSpace | None" = None) -> "SearchSpace":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise SearchSpaceError("reading a TOML space needs Python 3.11+ or "
                                       "`pip install tomli`") from None
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise SearchSpaceError(f"space file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SearchSpaceError(f"{path}: not valid TOML ({exc})") from None
        table = doc.get("space", doc) if isinstance(doc.get("space"), dict) else doc
        if not table:
            raise SearchSpaceError(f"{path}: no parameters (put them in a [space] table)")
        try:
            space = cls.from_dict(table)
        except SearchSpaceError as exc:
            raise SearchSpaceError(f"{path}: {exc}") from None
        if base:
            space = cls({**base.dims, **space.dims})._checked()
        return space

    @classmethod
    def book(cls) -> "SearchSpace":
        """The book's space: lr log-uniform in [1e-6, 1e-2], weight decay in [1e-8, 1e-4]."""
        return cls.parse(BOOK_SPACE)

    def _checked(self) -> "SearchSpace":
        if not any(d.searched for d in self.dims.values()):
            raise SearchSpaceError("the space searches nothing: give at least one range, "
                                   "e.g. lr=log:1e-6:1e-2")
        return self

    # -- views
    def searched(self) -> list[Dimension]:
        return [d for d in self.dims.values() if d.searched]

    def fixed_values(self) -> dict:
        out = {}
        for d in self.dims.values():
            if d.kind == "fixed":
                out[d.name] = d.value
            elif d.kind == "choice" and len(d.choices) == 1:
                out[d.name] = d.choices[0]
        return out

    def to_dict(self) -> dict:
        return {name: d.to_dict() for name, d in self.dims.items()}

    def to_cli(self) -> str:
        return " ".join(f"{d.name}={d.spec()}" for d in self.dims.values())

    def to_toml(self) -> str:
        lines = ["[space]"]
        for d in self.dims.values():
            lines.append(f'{d.name} = "{d.spec()}"' if d.kind != "fixed"
                         else f"{d.name} = {_toml_scalar(d.value)}")
        return "\n".join(lines) + "\n"

    def __contains__(self, name) -> bool:
        return name in self.dims

    def __getitem__(self, name) -> Dimension:
        return self.dims[name]

    def __eq__(self, other) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __str__(self) -> str:
        return self.to_cli()


def _toml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return _num(v)


def resolve_params(space: SearchSpace, sampled: dict, batch_size: int) -> dict:
    """All hyperparameters of one trial: sampled values over fixed ones over the defaults."""
    params = dict(DEFAULTS)
    params["batch_size"] = batch_size
    params.update(space.fixed_values())
    params.update(sampled)
    return params
