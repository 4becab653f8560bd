"""Resolve a strategy (built-in name, user `.py` file, or stored source) and run it.

Every signal computation goes through `compute_signals`: live execution will run user code in a
sandboxed subprocess behind this same function, so nothing else may call `signals` directly.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES
from xcoin_trading.strategy.contract import StrategyError, validate_signals

SignalsFn = Callable[[pl.DataFrame, dict], pl.DataFrame]


@dataclass(frozen=True)
class Strategy:
    """A loaded strategy: its code name, where it came from and its parameter defaults."""

    code: str
    kind: str  # "builtin" | "file" | "source"
    signals_fn: SignalsFn = field(repr=False)
    default_params: Mapping[str, Any] = field(default_factory=dict)
    check_params_fn: Callable[[dict], None] | None = field(default=None, repr=False)
    source_path: Path | None = None
    source_sha256: str | None = None
    source: str | None = field(default=None, repr=False)  # user code: only ever run in the sandbox

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with `params`, coerced to the defaults' types; unknown names refused.

        A strategy without `DEFAULT_PARAMS` accepts any parameters as given.
        """
        given = dict(params or {})
        if not self.default_params:
            return given
        unknown = sorted(set(given) - set(self.default_params))
        if unknown:
            raise ValidationError(
                "params",
                f"unknown parameter(s) {unknown} for {self.code}; known: {sorted(self.default_params)}",
            )
        out = dict(self.default_params)
        for name, value in given.items():
            out[name] = _coerce(name, value, self.default_params[name])
        if self.check_params_fn is not None:
            self.check_params_fn(out)
        return out


def _coerce(name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if kind is float:
            f = float(value)
            if f != f or f in (float("inf"), float("-inf")):
                raise ValueError(value)
            return f
        return kind(value)
    except (TypeError, ValueError):
        raise ValidationError(f"params.{name}", f"must be {kind.__name__}, got {value!r}") from None


def _from_module(
    code: str, kind: str, module: types.ModuleType, path: Path | None, source: str | None
) -> Strategy:
    fn = _callable(module, "signals")
    if fn is None:
        raise StrategyError(code, "does not define a function signals(candles, params)")
    defaults = getattr(module, "DEFAULT_PARAMS", {}) or {}
    if not isinstance(defaults, Mapping):
        raise StrategyError(code, f"DEFAULT_PARAMS must be a dict, got {type(defaults).__name__}")
    check = _callable(module, "check_params")
    digest = hashlib.sha256(source.encode()).hexdigest() if source is not None else None
    return Strategy(code, kind, fn, dict(defaults), check, path, digest)


def _callable(module: types.ModuleType, name: str) -> Callable[..., Any] | None:
    """The module's function `name`, if it has one: user code, whose answers are checked when it runs."""
    value = getattr(module, name, None)
    return value if callable(value) else None


def _literal_defaults(code: str, tree: ast.Module) -> dict[str, Any]:
    """`DEFAULT_PARAMS = {...}` read as a literal: user code is never executed in this process."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEFAULT_PARAMS" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise StrategyError(
                    code, "DEFAULT_PARAMS must be a literal dict (numbers, strings, booleans)"
                ) from None
            if not isinstance(value, dict):
                raise StrategyError(code, f"DEFAULT_PARAMS must be a dict, got {type(value).__name__}")
            return value
    return {}


def _sandboxed_signals(code: str, source: str) -> SignalsFn:
    def run(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
        from xcoin_trading.strategy.sandbox import run_sandboxed

        return run_sandboxed(code, source, candles, params).signals

    return run


def load_source(code: str, source: str, *, path: Path | None = None) -> Strategy:
    """A user strategy from Python source text (a stored strategy, or a file's contents).

    The source is parsed, never executed here: `signals` runs in the sandbox (`sandbox.py`)."""
    try:
        tree = ast.parse(source, filename=str(path) if path else f"<strategy {code}>")
    except SyntaxError as exc:
        raise StrategyError(code, f"failed to load: SyntaxError: {exc.msg} (line {exc.lineno})") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "signals" for n in tree.body):
        raise StrategyError(code, "does not define a function signals(candles, params)")
    digest = hashlib.sha256(source.encode()).hexdigest()
    return Strategy(code, "file" if path else "source", _sandboxed_signals(code, source), _literal_defaults(code, tree),
                    None, path, digest, source)  # fmt: skip


@functools.cache
def _read_once(path: str) -> str:
    """A built-in's source, read once per process: the code imported is what runs, whatever the
    file says later (and a backtest does not read the file on every call)."""
    return Path(path).read_text()


def load_strategy(ref: str) -> Strategy:
    """A built-in strategy by name, or a user strategy from a `.py` file path."""
    if not ref or not isinstance(ref, str):
        raise ValidationError("strategy", f"must be a built-in name or a .py file, got {ref!r}")
    if ref in BUILTIN_STRATEGIES:
        module = importlib.import_module(f"xcoin_trading.strategy.builtin.{ref}")
        source = _read_once(module.__file__) if module.__file__ else None
        return _from_module(ref, "builtin", module, None, source)
    path = Path(ref).expanduser()
    if path.suffix == ".py" or "/" in ref:
        if not path.is_file():
            raise NotFound(f"strategy file {str(path)!r} does not exist")
        return load_source(path.stem, path.read_text(), path=path.resolve())
    raise NotFound(
        f"unknown strategy {ref!r}: not a built-in ({', '.join(BUILTIN_STRATEGIES)}) nor a .py file"
    )


def compute_signals(
    strategy: Strategy, candles: pl.DataFrame, params: Mapping[str, Any] | None
) -> pl.DataFrame:
    """Run the strategy on normalised candles and return validated signals (one row per candle).

    `params` must already be resolved (`Strategy.resolve_params`). The strategy receives a copy
    of `params` so it cannot change the caller's dict.
    """
    try:
        raw = strategy.signals_fn(candles, dict(params or {}))
    except StrategyError:
        raise  # the sandbox already named what the user's code did
    except Exception as exc:  # user code: any failure is the strategy's, named as such
        raise StrategyError(strategy.code, f"raised {type(exc).__name__}: {exc}") from exc
    return validate_signals(raw, candles, strategy.code)


__all__ = ["Strategy", "compute_signals", "load_source", "load_strategy"]
