"""Typed dicts to frozen dataclasses and back: the checks and conversions behind ``asr.config``.

``from_dict(FeatureConfig, {"n_mels": "80"}, "conf/x.yaml.feature")`` converts each value to its field's
annotated type (YAML strings from overrides included) and rejects unknown keys with the valid ones listed;
``to_dict`` is its inverse (tuples become lists), for YAML files and checkpoints. Nothing here knows the
sections of a config; a dataclass declares renamed keys as a ``RENAMED`` ClassVar.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from typing import Any

import yaml

from asr.errors import ConfigError


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_range(name: str, value: float, lo: float, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    bad = value <= lo if lo_open else value < lo
    if hi is not None:
        bad = bad or (value >= hi if hi_open else value > hi)
    if bad:
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        hi_s = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ConfigError(f"{name} must be {lo_s}{hi_s}; got {value!r}")


def renamed_keys(cls: type) -> tuple[str, dict[str, str]]:
    """``cls``'s section name and the old names of its keys, ``{old: new}`` (a class's ``RENAMED`` ClassVar:
    keys renamed since configs and checkpoints were first written, still read with a warning)."""
    return getattr(cls, "RENAMED", ("", {}))


def renamed(cls: type, data: dict, where: str) -> dict:
    """``data`` with the old names of ``cls``'s keys replaced by the new ones (a FutureWarning each)."""
    section, renames = renamed_keys(cls)
    if not any(k in data for k in renames):
        return data
    source = where.removesuffix(f".{section}")  # "conf/x.yaml", not "conf/x.yaml.train"
    data = dict(data)
    for old, new in renames.items():
        if old in data:
            if new in data:
                raise ConfigError(f"{source}: both {section}.{old} and {section}.{new} are set; {old} is the "
                                  f"old name of {new}: keep {new}")
            warnings.warn(f"{source}: {section}.{old} is now called {section}.{new}; the old name still "
                          "works but will go", FutureWarning, stacklevel=3)
            data[new] = data.pop(old)
    return data


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/override value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
        if value is None:
            value = []
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(coerce(v, item_tp, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on (train.amp=off) as a boolean
            return "on" if value else "off"
        return "" if value is None else str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys."""
    types_ = field_types(cls)
    data = renamed(cls, data, where)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(types_)}"
        )
    kwargs = {k: coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists) suitable for YAML or a checkpoint."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)
