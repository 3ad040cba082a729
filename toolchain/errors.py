"""Errors a user can cause.

Every command catches :class:`InputError` at its edge, prints its message as one line on
stderr and exits with code 2 (docs/ARCHITECTURE.md, "Contracts"). Raise it with a message that
names the thing that is wrong and, where there is one, the fix.
"""


class InputError(Exception):
    """Bad input or usage: a missing or corrupt file, an unknown board, a malformed TOML."""


class UnsupportedModelError(InputError):
    """A well-formed model that uses something the memory model does not cover."""
