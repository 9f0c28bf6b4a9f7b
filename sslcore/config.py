"""Typed configuration: dataclasses are the schema and the only defaults; YAML files list differences.

A run's configuration is resolved in three layers, later ones winning::

    schema defaults (dataclass fields)  <-  YAML file  <-  dotted CLI overrides ("optim.lr=1e-3")

Every key is checked against the schema: an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the file (or "override") and the dotted key. The resolved configuration is written next to every output with
:func:`save_config`.

Supported field types: ``bool``, ``int``, ``float`` (ints are accepted), ``str``, ``Literal[...]``, ``Optional[T]``,
``list[T]``/``tuple[T, ...]``, ``dict[str, T]``, ``Any`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sslcore.errors import ConfigError
from sslcore.io import atomic_write_text

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Where:
    """Where a value came from: the source (a file, "override" or "config") and its dotted key."""

    def __init__(self, source: str, key: str = "") -> None:
        self.source, self.key = source, key

    def child(self, name: str) -> _Where:
        return _Where(self.source, f"{self.key}.{name}" if self.key else name)

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key}: {message}" if self.key else f"{self.source}: {message}")


def _coerce(value: Any, tp: Any, where: _Where) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted (lists to tuples etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise where.fail(f"expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise where.fail(f"expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise where.fail(f"expected a mapping (section {_type_name(tp)}), got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise where.fail(f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise where.fail(f"expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, where.child(str(i))) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, where.child(str(i))) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise where.fail(f"expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, where.child(str(k))) for k, v in value.items()}
    checks = {
        bool: (lambda v: isinstance(v, bool), "true/false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "a string"),
    }
    if tp not in checks:
        raise where.fail(f"unsupported schema type {_type_name(tp)}")
    ok, expected = checks[tp]
    if not ok(value):
        raise where.fail(f"expected {expected}, got {value!r}")
    return float(value) if tp is float else value


def _field_default(cls: type, name: str) -> Any:
    """A fresh instance of the default of field ``name`` of dataclass ``cls`` (None when it has none)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _build(cls: type[T], data: dict[str, Any], where: _Where, base: Any = None) -> T:
    """Build ``cls`` from the keys in ``data``; the other keys keep their values in ``base`` (default: the schema's).

    A nested section given partially starts from the *parent's* default for that section (its ``default_factory``,
    e.g. ``FeatureConfig(resize_ratio=1.0)``), not from the section class's own defaults: ``features.progress=false``
    changes that one key and nothing else.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise where.child(unknown[0]).fail(f"unknown key (valid here: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            section = getattr(base, key) if base is not None else _field_default(cls, key)
            kwargs[key] = _build(tp, value, where.child(key), section if isinstance(section, tp) else None)
        else:
            kwargs[key] = _coerce(value, tp, where.child(key))
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        key, _, rest = message.partition("=")
        if rest and key in names:  # "key=value: rule" from validate(): name the dotted key
            raise ConfigError(f"{where.source}: {where.child(key).key}={rest}") from None
        raise where.fail(message) from None


Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "must be >= 0")
POSITIVE_OR_NONE: Rule = (lambda v: v is None or v > 0, "must be > 0 (or null)")
ALL_POSITIVE: Rule = (lambda v: len(v) > 0 and all(x > 0 for x in v), "needs one or more values, each > 0")
ALL_NON_NEGATIVE: Rule = (lambda v: len(v) > 0 and all(x >= 0 for x in v), "needs one or more values, each >= 0")
PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
FRACTION: Rule = (lambda v: 0 <= v < 1, "must be in [0, 1)")
SCALE_RANGE: Rule = (lambda v: 0 < v[0] <= v[1] <= 1, "must be (low, high) with 0 < low <= high <= 1")
FINITE: Rule = (lambda v: math.isfinite(v), "must be a finite number")


def validate(cfg: Any, rules: dict[str, Rule]) -> None:
    """Check the fields of a config section against ``rules`` ({field: (predicate, what it must be)}).

    Called from a dataclass's ``__post_init__``; the ``ValueError`` becomes a :class:`ConfigError` naming the file
    (or override) and the section, e.g. ``override: features: batch_size=0: must be > 0``.
    """
    for key, (ok, rule) in rules.items():
        value = getattr(cfg, key)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ValueError(f"{key}={value!r}: {rule}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "data.crops=[2, 6]"]`` into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _looks_numeric(value):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
        _set_dotted(tree, key, value)
    return tree


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "infinity"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML)") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return _numeric_strings(data)


def _numeric_strings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _numeric_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numeric_strings(v) for v in node]
    if isinstance(node, str) and _looks_numeric(node) and any(c in node.lower() for c in "e."):
        return float(node)
    return node


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Resolve a config: schema defaults <- YAML file at ``path`` <- dotted ``overrides``.

    Raises:
        ConfigError: naming the file (or "override") and the dotted key at fault.
    """
    file_data = read_yaml(path) if path else {}
    for dotted in _dotted_keys(file_data):
        if dotted.rsplit(".", 1)[-1] in CLI_ONLY:
            raise ConfigError(
                f"{path}: {dotted}: can only be given on the command line (--trust-pickle), never in a file"
            )
    # Validate each layer separately so that the error names where the bad key came from.
    if file_data:
        _build(schema, file_data, _Where(str(path)))
    override_data = parse_overrides(overrides)
    if override_data:
        _build(schema, override_data, _Where("override"))
    return _build(schema, _deep_merge(file_data, override_data), _Where("config"))


def from_dict(
    schema: type[T], data: dict[str, Any], source: str, base: T | None = None, *, resolved: bool = False
) -> T:
    """Build ``schema`` from a mapping of differences from its defaults, or from ``base`` when given (nested sections
    as mappings); an unknown key or a bad value raises :class:`ConfigError` naming ``source`` and the dotted key.

    ``resolved=True`` reads a config sslbench wrote itself (a resolved config handed to a worker), which may carry
    the command-line-only keys (:data:`CLI_ONLY`); a user's file never may."""
    for dotted in [] if resolved else _dotted_keys(data):
        if dotted.rsplit(".", 1)[-1] in CLI_ONLY:
            raise ConfigError(f"{source}: {dotted}: can only be given on the command line, never in a file")
    return _build(schema, _numeric_strings(data), _Where(source), base)


CLI_ONLY = ("trust_pickle",)
"""Keys a YAML file may not set: a config file shared with a run must not turn on arbitrary code execution."""


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict):
            out += _dotted_keys(value, f"{prefix}{key}.")
    return out


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return the path."""
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
