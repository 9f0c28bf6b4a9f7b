"""User-facing errors.

Library code raises :class:`SSLBenchError` (or a subclass) for bad input: a missing file, an unknown key, a malformed
checkpoint. The CLI turns it into one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SSLBenchError(Exception):
    """Bad input or an unsatisfiable request; the message names the file/key/value at fault."""


class ConfigError(SSLBenchError):
    """A configuration file or override is invalid."""


class DataError(SSLBenchError):
    """A dataset on disk is missing or does not follow the expected layout."""
