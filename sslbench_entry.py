"""Console entry point of ``sslbench``.

It lives outside the ``evaluate``/``pretrain`` packages on purpose: if an unrelated installed distribution owns one
of those import names (Hugging Face's ``evaluate`` is the common case), importing ``evaluate.cli`` would fail with a
confusing traceback. This shim checks first and stops with one line that names the offender.
"""

from __future__ import annotations

import importlib
import sys

_MARKER = "SSLBENCH_PACKAGE"


def check_packages() -> str | None:
    """Return an error message if ``evaluate`` or ``pretrain`` is not sslbench's own package, else None."""
    for name in ("sslcore", "pretrain", "evaluate"):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # an unrelated package may fail to import for its own reasons
            return f"cannot import sslbench's '{name}' package: {type(exc).__name__}: {exc}"
        if not getattr(module, _MARKER, False):
            where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
            return (
                f"the import name '{name}' resolves to an unrelated package at {where}, which shadows sslbench's "
                f"'{name}'; uninstall it (e.g. 'pip uninstall {name}') or use sslbench's own .venv"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    problem = check_packages()
    if problem:
        print(f"sslbench: error: {problem}", file=sys.stderr)
        return 2
    from evaluate.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
