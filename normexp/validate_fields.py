"""Field checks shared by every config rule: each names its field and what is allowed."""

from normexp.errors import ConfigError


def check_choice(field: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(field, f"unknown {value!r}; allowed: {', '.join(map(str, allowed))}")


def check_int(field: str, value: object, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or null" if allow_none else ""
        raise ConfigError(field, f"{value!r} is not allowed; must be an integer >= {minimum}{none}")


def check_number(field: str, value: object, minimum: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ConfigError(field, f"{value!r} is not allowed; must be a number {op} {minimum}")
