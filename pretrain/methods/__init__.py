"""Pretraining methods: a plain dict from name to ``"module:Class"`` (imported when selected).

``PretrainConfig.method`` is a key of :data:`METHODS` or, for a method living outside sslbench, a ``"module:Class"``
path of an :class:`~pretrain.methods.base.SSLMethod` subclass, imported only from installed code, the checkout,
``PYTHONPATH`` or a directory passed with ``--plugin`` (:func:`sslcore.plugins.import_object`), never from the
working directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pretrain.config import PretrainConfig
from pretrain.methods.base import SSLMethod
from sslcore.errors import ConfigError
from sslcore.plugins import import_object

METHODS: dict[str, str] = {
    "bam": "pretrain.methods.bam:BAM",
    "dino": "pretrain.methods.dino:DINO",
    "ibot": "pretrain.methods.ibot:IBOT",
    "adclr": "pretrain.methods.adclr:ADCLR",  # ADCLR and, with adclr.mim=true, ADCLR*
    "sere": "pretrain.methods.sere:SERE",
}


def method_class(name: str, plugin_dirs: Sequence[str | Path] = ()) -> type[SSLMethod]:
    target = METHODS.get(name, name)
    if ":" not in target:
        raise ConfigError(f"method: unknown method {name!r} (valid: {', '.join(METHODS)} or 'module:Class')")
    cls = import_object(target, plugin_dirs if name not in METHODS else (), key="method")
    if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
        raise ConfigError(f"method: {target!r} is not an SSLMethod subclass")
    return cls


def build_method(cfg: PretrainConfig, plugin_dirs: Sequence[str | Path] = ()) -> SSLMethod:
    """The method named by ``cfg.method``; a bad model/method setting (ValueError) becomes a ConfigError."""
    cls = method_class(cfg.method, plugin_dirs)
    try:
        return cls(cfg)
    except ValueError as exc:
        raise ConfigError(f"{cfg.method}: {exc}") from None
