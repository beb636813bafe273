"""Errors that are part of quantgate's interface.

Every error a user can cause by what they pass in (a path, a scheme name, a flag) is a
``QuantgateError`` with a one-line message naming what is wrong; the CLI prints that line and exits
with code 2. Anything else escaping is a bug in quantgate and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "QuantgateError",
    "ModelLoadError",
    "PickleRefusedError",
    "UnknownSchemeError",
    "UnsupportedSchemeError",
    "ManifestError",
    "ChatTemplateError",
]


class QuantgateError(Exception):
    """Bad input from the user: the message says what and where; exit code 2 on the CLI."""

    exit_code = 2


class ModelLoadError(QuantgateError):
    """A model directory is missing, incomplete or unreadable."""


class PickleRefusedError(ModelLoadError):
    """A checkpoint is a pickle file, which can run code on load; refused without an opt-in."""


class UnknownSchemeError(QuantgateError):
    """A quantization scheme name that quantgate does not know."""


class UnsupportedSchemeError(QuantgateError):
    """A known scheme that the current device or model cannot run (for example fp8 on a CPU)."""


class ManifestError(QuantgateError):
    """A variant's manifest.json is missing, corrupt, or disagrees with the stored weights."""


class ChatTemplateError(QuantgateError):
    """A model's chat template refused the messages (many refuse a system turn, or turns that do not alternate)."""
