"""Pretraining methods: a plain dict from name to ``"module:Class"`` (imported when selected).

``PretrainConfig.method`` is a key of :data:`METHODS` or, for a method living outside sslbench, a ``"module:Class"``
path of an :class:`~pretrain.methods.base.SSLMethod` subclass.
"""

from __future__ import annotations

import importlib

from pretrain.config import PretrainConfig
from pretrain.methods.base import SSLMethod
from sslcore.errors import ConfigError

METHODS: dict[str, str] = {
    "bam": "pretrain.methods.bam:BAM",
    "dino": "pretrain.methods.dino:DINO",
    "ibot": "pretrain.methods.ibot:IBOT",
}


def method_class(name: str) -> type[SSLMethod]:
    target = METHODS.get(name, name)
    if ":" not in target:
        raise ConfigError(f"method: unknown method {name!r} (valid: {', '.join(METHODS)} or 'module:Class')")
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method: cannot import {target!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
        raise ConfigError(f"method: {target!r} is not an SSLMethod subclass")
    return cls


def build_method(cfg: PretrainConfig) -> SSLMethod:
    """The method named by ``cfg.method``; a bad model/method setting (ValueError) becomes a ConfigError."""
    cls = method_class(cfg.method)
    try:
        return cls(cfg)
    except ValueError as exc:
        raise ConfigError(f"{cfg.method}: {exc}") from None
