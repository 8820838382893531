"""How an option is declared once: a dataclass field with its help, choices, parser and checks.

`option(...)` makes a `Config` field whose metadata says everything the rest
derives from it: `run.py` defines the flag (`flag_kind`, `flag_default`,
`help_text`) and reads it (`from_flag`),
`Config.validate()` runs `check_field` on its value, and `flags_doc` writes its
docs/flags.md row. The checks here are the generic ones; each raises UsageError naming
the flag, the value received and what is allowed.
"""

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from harness.errors import UsageError

# The largest whole number a flag takes: TensorFlow holds sizes, counts and token ids
# as int32, and a larger value overflows there (or asks for impossible memory).
MAX_INT = 2**31 - 1

Check = Callable[[str, Any], None]


def option(
    default: Any,
    help: str,
    *,
    group: str,
    choices: tuple = (),
    parse: Callable[[str], Any] | None = None,
    checks: tuple = (),
    maximum: int = MAX_INT,
    shown: str | None = None,
    text: Callable[[Any], str] | None = None,
) -> Any:
    """A `Config` field declaring its flag.

    Args:
        default: the value when the flag is not given.
        help: the flag's help; '{choices}' stands for the choices joined by ' | '.
        group: the docs/flags.md table the flag is listed in.
        choices: the values allowed (checked by `validate`, listed in the help).
        parse: turns the flag's text into the value (list-like flags; the flag is
            then a string whose default is `flag_default`).
        checks: `(flag, value) -> None` functions raising UsageError, run in
            order on a value that is not None.
        maximum: the largest whole number allowed (each one of a tuple too).
        shown: the README's default column, where the default alone says too little.
        text: a parsed flag's value as it is typed (the inverse of `parse`; default:
            comma-separated).
    """
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "group": group,
            "choices": choices,
            "parse": parse,
            "checks": checks,
            "maximum": maximum,
            "shown": shown,
            "text": text or csv,
        },
    )


def help_text(field: dataclasses.Field) -> str:
    """The field's help with its choices filled in."""
    return field.metadata["help"].format(choices=" | ".join(field.metadata["choices"]))


def flag_kind(field: dataclasses.Field, cls: type) -> type:
    """The type of the field's flag: str for a parsed one, else the field's own
    type with Optional dropped (int, float, str or bool)."""
    if field.metadata["parse"]:
        return str
    kind = typing.get_type_hints(cls)[field.name]
    return next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)


def flag_default(field: dataclasses.Field) -> Any:
    """The flag's default: the field's, or for a parsed flag its text ('5,8'; '' for none)."""
    if not field.metadata["parse"]:
        return field.default
    return ",".join(map(str, field.default or ()))


def from_flag(field: dataclasses.Field, value: Any) -> Any:
    """The field's value from its flag's: parsed for a list-like flag, else as is."""
    return field.metadata["parse"](value) if field.metadata["parse"] else value


def flagfile_line(field: dataclasses.Field, value: Any) -> str | None:
    """The field's value as a line of an absl flagfile ('--epochs=10', '--nojit_compile'),
    None for an unset value (the flag's default stands for it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"--{'' if value else 'no'}{field.name}"
    if field.metadata["parse"]:
        value = field.metadata["text"](value)
    return f"--{field.name}={value}"


def check_field(field: dataclasses.Field, value: Any) -> None:
    """Runs the field's declared checks on `value` (none for None)."""
    if value is None:
        return
    name, choices = field.name, field.metadata["choices"]
    if choices and value not in choices:
        raise UsageError(f"--{name}={value!r} is not allowed: use one of {', '.join(choices)}")
    for number in value if isinstance(value, tuple) else (value,):
        if _is_whole(number) and number > field.metadata["maximum"]:
            raise UsageError(
                f"--{name}={number} is not allowed: it must be at most {field.metadata['maximum']}"
            )
    for check in field.metadata["checks"]:
        check(name, value)


def positive(name: str, value: float) -> None:
    """A finite number greater than 0."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"--{name}={value} is not allowed: it must be a finite number")
    if not value > 0:
        raise UsageError(f"--{name}={value} is not allowed: it must be greater than 0")


def off_or_positive(name: str, value: int) -> None:
    """0 for off, or a positive number."""
    if value < 0:
        raise UsageError(
            f"--{name}={value} is not allowed: it must be 0 (off) or a positive number"
        )


def non_negative(name: str, value: int) -> None:
    """0 or a positive number."""
    if value < 0:
        raise UsageError(f"--{name}={value} is not allowed: it must be 0 or a positive number")


def threads(name: str, value: int) -> None:
    """0 for TensorFlow's choice, or a number of threads."""
    if value < 0:
        raise UsageError(
            f"--{name}={value} is not allowed: it must be 0 (TensorFlow's "
            "choice) or a positive number of threads"
        )


def at_least(low: int, why: str) -> Check:
    """A check that the value is at least `low`, for the reason `why`."""

    def check(name: str, value: int) -> None:
        if value < low:
            raise UsageError(f"--{name}={value} is not allowed: it must be at least {low} ({why})")

    return check


def parse_name_list(text: str) -> tuple:
    """Parses 'accuracy,auc' into ('accuracy', 'auc'); '' gives ()."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_int_list(flag: str, text: str) -> tuple:
    """Parses '5,8' into (5, 8); '' gives (). Raises UsageError naming the flag."""
    text = text.strip()
    if not text:
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"--{flag}={text!r} is not allowed: give comma-separated whole "
            "numbers, e.g. 5,8 (or an empty value to disable)"
        ) from None
    return values


def csv(values) -> str:
    """'5,8' for (5, 8): a list flag's value as it is typed."""
    return ",".join(str(v) for v in values)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
