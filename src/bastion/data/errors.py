"""The error raised when an offline data file is missing or malformed."""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError"]


class DataNotFoundError(FileNotFoundError):
    """A data file or folder is missing; the message names the path and what provides it."""


class DataError(ValueError):
    """A data file exists but is malformed (truncated, wrong magic number, wrong size...)."""
