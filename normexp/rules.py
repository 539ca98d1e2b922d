"""The types of rule a config field obeys (Int, Num, Choice, ..., Field): what each allows,
how it says so, and the one-line ConfigError a bad value gets (``Field.check``).

It imports nothing from normexp but normexp.errors: the norms' registry names its parameters'
rules with these types, and normexp.schema, which reads the registries, lists every field.
"""

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from normexp.errors import ConfigError, did_you_mean

MAX_SEED = 2**32 - 1  # numpy's seed range; Python's and torch's are wider
MAX_THREADS = 1024  # absolute; a run is also held to this machine's CPU count (validate.py)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a folder name, never '..' or hidden


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


@dataclass(frozen=True)
class Int:
    lo: int = 1
    hi: int | None = None
    null: bool = False

    def ok(self, v: object) -> bool:
        return _is_int(v) and v >= self.lo and (self.hi is None or v <= self.hi)

    def describe(self) -> str:
        if self.hi is None:
            return f"an integer >= {self.lo}"
        return f"an integer from {self.lo} to {self.hi}"


@dataclass(frozen=True)
class Num:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False
    null: bool = False

    def ok(self, v: object) -> bool:
        if not _is_num(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or not (v > self.hi or (self.hi_open and v == self.hi))

    def describe(self) -> str:
        if self.hi is None:
            return f"a finite number {'>' if self.lo_open else '>='} {_num(self.lo)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"a number in {left}{_num(self.lo)}, {_num(self.hi)}{right}"


@dataclass(frozen=True)
class Bool:
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and v in self.options

    def describe(self) -> str:
        return ", ".join(self.options)


@dataclass(frozen=True)
class Name:
    """A string that becomes a folder or project name."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and NAME_PATTERN.fullmatch(v) is not None

    def describe(self) -> str:
        return "a non-empty name of letters, digits, '_', '-' and '.', not starting with '.'"


@dataclass(frozen=True)
class Folder:
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and v.strip() != "" and "\0" not in v

    def describe(self) -> str:
        return "a non-empty path"


@dataclass(frozen=True)
class IntList:
    lo: int = 1
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, list) and len(v) > 0 and all(_is_int(w) and w >= self.lo for w in v)

    def describe(self) -> str:
        return f"a non-empty list of integers >= {self.lo}"


@dataclass(frozen=True)
class NumList:
    null: bool = False
    below: float | None = None  # every item also < below (fractions: 1)

    def ok(self, v: object) -> bool:
        top = math.inf if self.below is None else self.below
        return isinstance(v, list) and all(_is_num(w) and 0 < w < top for w in v)

    def describe(self) -> str:
        top = "" if self.below is None else f" and < {_num(self.below)}"
        return f"a list of finite numbers > 0{top}"


@dataclass(frozen=True)
class ChoiceList:
    options: tuple[str, ...]
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, list) and all(isinstance(w, str) and w in self.options for w in v)

    def describe(self) -> str:
        return f"a list of: {', '.join(self.options)}"


@dataclass(frozen=True)
class Interval:
    """[low, high] with 0 < low <= high, both finite."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return (
            isinstance(v, list) and len(v) == 2 and all(map(_is_num, v)) and 0 < v[0] <= v[1]
        )

    def describe(self) -> str:
        return "[low, high] with 0 < low <= high"


@dataclass(frozen=True)
class SubGrid:
    """A declared sub-grid: {dotted config field: "v1,v2" or [v1, v2]}, at least one field."""

    null: bool = False

    @staticmethod
    def _values_ok(w: object) -> bool:
        if isinstance(w, str):
            return w.strip() != ""
        scalars = isinstance(w, list) and all(isinstance(x, str | int | float) for x in w)
        return scalars and len(w) > 0

    def ok(self, v: object) -> bool:
        return (
            isinstance(v, Mapping)
            and len(v) > 0
            and all(isinstance(k, str) and k != "" and self._values_ok(w) for k, w in v.items())
        )

    def describe(self) -> str:
        return '{field: "v1,v2" or [v1, v2], ...} with at least one field'


MAX_PACK = 16  # replicas in one packed group: beyond it the bench measured no further gain


@dataclass(frozen=True)
class PackRule:
    """runtime.pack: auto (the planner decides), off, or a number of replicas per group."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return v in ("auto", "off") or (_is_int(v) and 1 <= v <= MAX_PACK)

    def describe(self) -> str:
        return f"auto, off or an integer from 1 to {MAX_PACK}"


Rule = (
    Int | Num | Bool | Choice | Name | Folder | IntList | NumList | ChoiceList | Interval | SubGrid
    | PackRule
)


@dataclass(frozen=True)
class Field:
    path: str  # dotted, as on the command line
    rule: Rule
    needs: tuple[str, tuple[str, ...]] | None = None  # present and checked when path's value in
    optional: bool = False  # may be absent (a constructor default applies)
    doc: str = ""

    def allowed(self) -> str:
        text = self.rule.describe()
        return text + (" or null" if self.rule.null else "")

    def check(self, value: object) -> None:
        if value is None and self.rule.null:
            return
        if self.rule.ok(value):
            return
        if isinstance(self.rule, Choice):
            near = did_you_mean(value, self.rule.options)
            raise ConfigError(self.path, f"unknown {show(value)}{near}; allowed: {self.allowed()}")
        raise ConfigError(self.path, f"{show(value)} is not allowed; must be {self.allowed()}")


def show(value: object) -> str:
    """A value as the user typed it: true/false/null, strings quoted."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def max_jobs() -> int:
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class JobsRule:
    """joblib's n_jobs: -1 (one per core) or a bounded positive count."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return _is_int(v) and (v == -1 or 1 <= v <= max_jobs())

    table = "-1 (one per core) or an integer from 1 to 4 x this machine's CPUs"

    def describe(self) -> str:
        return f"-1 (one per core) or an integer from 1 to {max_jobs()} (4 x this machine's CPUs)"


@dataclass(frozen=True)
class Off:
    null: bool = False

    def ok(self, v: object) -> bool:
        return v is False

    def describe(self) -> str:
        return "false (paths.results_dir is relative to where you run the command)"
