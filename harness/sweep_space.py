"""The trials of a sweep: a grid of flag values, or random draws from ranges.

`--grid 'learning_rate=1e-3,3e-3;optimizer=adam,nadam'` gives every combination;
`--ranges 'learning_rate=1e-4:1e-2;batch_size=16,32,64'` with `--random=N` gives N
draws: a `lo:hi` range of an integer flag is uniform over the integers, of a
float flag log-uniform when it is a rate (`*learning_rate`) or spans more than
10x (both ends positive), uniform otherwise; a list is drawn from. A trial is
{flag name: value as typed}; its name says its index and values (`t00-lr0.001-adam`).
Importing this module does not import TensorFlow.
"""

import dataclasses
import difflib
import itertools
import math
import random

from harness import hparams
from harness.config import Config
from harness.errors import UsageError
from harness.options import flag_kind

# Flags the sweep sets per trial itself: sweeping (or passing) them makes no sense.
OWNED = ("run_name", "logdir", "resume", "overwrite")
_FIELDS = {field.name: field for field in dataclasses.fields(Config)}
_LOG_SPAN = 10  # a float range wider than this ratio is drawn log-uniformly
_DIGITS = 3  # significant digits of a drawn float (the value passed is the one named)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One swept flag: a list of `values` (as typed), or the range `low`..`high`."""

    name: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def kind(self) -> type:
        return flag_kind(_FIELDS[self.name], Config)

    @property
    def log_uniform(self) -> bool:
        return (
            self.is_range
            and self.kind is float
            and self.low > 0
            and (self.name.endswith("learning_rate") or self.high / self.low > _LOG_SPAN)
        )


def parse(flag: str, text: str, ranges_allowed: bool) -> list:
    """The dimensions `text` ('name=a,b;name=lo:hi') of --`flag` names.

    Raises:
        UsageError: an unknown or sweep-owned flag, a flag named twice, an empty
            list or range, or a range where only lists are allowed.
    """
    dimensions = []
    for part in filter(None, (part.strip() for part in text.split(";"))):
        name, equals, spec = (piece.strip() for piece in part.partition("="))
        _check_name(flag, name)
        if not equals or not spec:
            raise UsageError(
                f"--{flag}: {name!r} has no values: write {name}=A,B or {name}=LOW:HIGH"
            )
        if name in (dimension.name for dimension in dimensions):
            raise UsageError(f"--{flag}: --{name} is named twice")
        dimensions.append(_dimension(flag, name, spec, ranges_allowed))
    if not dimensions:
        raise UsageError(f"--{flag}={text!r} names no flag: write e.g. 'learning_rate=1e-3,3e-3'")
    return dimensions


def grid(dimensions: list) -> list:
    """Every combination of the dimensions' values, the first dimension slowest."""
    names = [dimension.name for dimension in dimensions]
    return [
        dict(zip(names, values))
        for values in itertools.product(*(dimension.values for dimension in dimensions))
    ]


def draws(dimensions: list, count: int, seed: int) -> list:
    """`count` random trials from `dimensions`, the same for the same `seed`."""
    rng = random.Random(seed)
    return [
        {dimension.name: _draw(dimension, rng) for dimension in dimensions} for _ in range(count)
    ]


def trial_name(index: int, trial: dict, width: int) -> str:
    """`t<index>-<values>`, e.g. 't03-lr0.003-adam', safe as a run name."""
    parts = [f"t{index:0{width}d}"]
    for name, value in trial.items():
        parts.append(f"{hparams.short_name(name)}{value}")
    name = "-".join(parts)
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in name)


def _check_name(flag: str, name: str) -> None:
    if name in OWNED:
        raise UsageError(f"--{flag}: --{name} cannot be swept: the sweep sets it for each trial")
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, list(_FIELDS), n=3)
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        raise UsageError(f"--{flag}: unknown flag --{name}{hint}")


def _dimension(flag: str, name: str, spec: str, ranges_allowed: bool) -> Dimension:
    kind = flag_kind(_FIELDS[name], Config)
    if ":" in spec and kind in (int, float):
        if not ranges_allowed:
            raise UsageError(f"--{flag}: {name}={spec} is a range; --grid takes lists (A,B,C)")
        low, _, high = spec.partition(":")
        try:
            low, high = kind(low), kind(high)
        except ValueError:
            raise UsageError(f"--{flag}: {name}={spec} is no range of {kind.__name__}s") from None
        if not low < high:
            raise UsageError(
                f"--{flag}: the range {name}={spec} is empty: write LOW:HIGH, LOW < HIGH"
            )
        return Dimension(name, low=low, high=high)
    values = tuple(value.strip() for value in spec.split(","))
    if not all(values):
        raise UsageError(f"--{flag}: {name}={spec} holds an empty value")
    if len(set(values)) != len(values):
        raise UsageError(f"--{flag}: {name}={spec} names a value twice")
    return Dimension(name, values=values)


def _draw(dimension: Dimension, rng: random.Random) -> str:
    if not dimension.is_range:
        return rng.choice(dimension.values)
    if dimension.kind is int:
        return str(rng.randint(int(dimension.low), int(dimension.high)))
    if dimension.log_uniform:
        value = math.exp(rng.uniform(math.log(dimension.low), math.log(dimension.high)))
    else:
        value = rng.uniform(dimension.low, dimension.high)
    return f"{value:.{_DIGITS}g}"
