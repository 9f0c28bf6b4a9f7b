"""Importing user code named in a config (``method: package.module:Class``) without trusting the working directory.

A config file can be shared; importing ``module:Class`` through the plain ``sys.path`` would run whatever
``module.py`` sits in the directory the command was started from (``python -m`` puts it first on ``sys.path``). The
rule here: the module must come from an installed location (``sys.path`` without the implicit working-directory
entry), from the sslbench checkout itself, from ``PYTHONPATH`` as the user set it, or from a directory passed
explicitly (``--plugin DIR``). Anything else is a one-line :class:`~sslcore.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sslcore.errors import ConfigError
from sslcore.io import REPO_ROOT


def trusted_paths(plugin_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Search path for plugins: explicit ``plugin_dirs``, then ``sys.path`` without the implicit working-directory
    entry ('' or the cwd, unless the cwd is also listed in ``PYTHONPATH`` or is the sslbench checkout)."""
    cwd = Path.cwd().resolve()
    explicit = {Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    explicit.add(REPO_ROOT.resolve())
    out = [str(Path(p).resolve()) for p in plugin_dirs]
    # the checkout itself: an editable install imports it through a finder hook, not through a sys.path entry
    out.append(str(REPO_ROOT.resolve()))
    for entry in sys.path:
        if entry in ("", "."):
            continue
        with contextlib.suppress(OSError):
            resolved = Path(entry).resolve()
            if resolved == cwd and resolved not in explicit:
                continue
        out.append(entry)
    return out


def check_plugin_dirs(plugin_dirs: Sequence[str | Path]) -> None:
    """Every ``--plugin`` entry is an existing directory (a :class:`ConfigError` naming the first that is not)."""
    for plugin in plugin_dirs:
        if not Path(plugin).is_dir():
            raise ConfigError(f"--plugin {plugin}: not a directory")


def import_object(target: str, plugin_dirs: Sequence[str | Path] = (), key: str = "method") -> Any:
    """The object ``module:attr`` names, imported only from :func:`trusted_paths`.

    Raises:
        ConfigError: naming ``key`` and ``target`` when the module is not found there, lives only in the working
        directory, or lacks the attribute.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: {target!r} is not 'package.module:Class'")
    check_plugin_dirs(plugin_dirs)
    search = trusted_paths(plugin_dirs)
    top = module_name.split(".", 1)[0]
    spec = importlib.machinery.PathFinder.find_spec(top, search)
    if spec is None and top not in sys.builtin_module_names:
        raise ConfigError(
            f"{key}: {target!r}: module {top!r} is not installed (the working directory is not searched; "
            "pass --plugin DIR to import code from a directory)"
        )
    added = [p for p in map(str, (Path(d).resolve() for d in plugin_dirs)) if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {target!r} ({exc})") from None
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
    origin = getattr(module, "__file__", None)
    if origin and spec is not None and spec.origin and spec.submodule_search_locations is None:
        if Path(origin).resolve() != Path(spec.origin).resolve():
            raise ConfigError(f"{key}: {target!r} resolved to {origin}, outside the trusted paths")
    if origin and not any(_inside(origin, p) for p in search) and top not in sys.builtin_module_names:
        raise ConfigError(f"{key}: {target!r} was imported from {origin}, outside the trusted paths (--plugin DIR)")
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module {module_name!r} has no {attr!r}") from None


def _inside(path: str, root: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError):
        return False
    return True
