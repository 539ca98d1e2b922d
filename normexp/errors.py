"""Errors caused by the user's input.

They are printed as one line (no traceback unless HYDRA_FULL_ERROR=1 or NORMEXP_VERBOSE=1)
and exit non-zero before anything is written to the results store.
"""

import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator


class NormexpError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(NormexpError):
    """A config field holds a value that is not allowed; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def did_you_mean(typed: object, allowed: Iterable[str]) -> str:
    """' (did you mean 'group'?)' when ``typed`` is a near miss of one of ``allowed`` (a typo),
    else '': appended to an 'unknown ...' message, before its list of what is allowed."""
    if not isinstance(typed, str):
        return ""
    close = difflib.get_close_matches(typed, list(allowed), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StoreError(NormexpError):
    """The results store cannot be written (missing permission, full disk, read-only)."""


class DataError(NormexpError):
    """A data directory or file is missing, unreadable or fails its integrity check."""


def verbose_errors() -> bool:
    return any(
        os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "NORMEXP_VERBOSE")
    )


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A user's mistake prints one line and exits 2; the traceback only when asked for."""
    try:
        yield
    except NormexpError as exc:
        if verbose_errors():
            traceback.print_exc()
        print(f"normexp: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
