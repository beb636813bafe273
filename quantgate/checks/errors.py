"""Errors the check library raises for input a user wrote: a cases file, a case, an assertion.

All are ``QuantgateError`` (exit code 2 on the CLI). Each message starts with where the problem is,
``FILE:LINE: FIELD: what is wrong``, so a user can jump to it; the ``where`` strings are built by the
parsers (``cases.py``) and passed down, never reconstructed after the fact.
"""

from __future__ import annotations

from quantgate.errors import QuantgateError

__all__ = ["CheckConfigError", "CasesFileError", "UnknownCheckError", "located"]


class CasesFileError(QuantgateError):
    """A cases file that cannot be read, or a line in it that is not a JSON object."""


class CheckConfigError(QuantgateError):
    """A case or an assertion with a missing field, a field of the wrong type, or a bad value."""


class UnknownCheckError(CheckConfigError):
    """An assertion ``type`` the registry does not know."""


def located(where: str, field: str, message: str) -> str:
    """``where: field: message`` with empty parts left out; the one format every error uses."""
    return ": ".join(part for part in (where, field, message) if part)
