"""Profile windows: which global steps `--profile_steps` asks to capture.

Kept free of TensorFlow so the entrypoint can reject a bad value before TF loads.
"""

from collections.abc import Sequence

Window = tuple[int, int]


def parse_profile_steps(text: str) -> list[Window]:
    """Parses the `--profile_steps` flag syntax into step windows.

    Args:
        text: Windows separated by ";", each "START,STOP" (inclusive, 1-based
            global steps), e.g. "10,15" or "10,15;200,205". Empty or blank
            text means no profiling.

    Returns:
        The windows as (start, stop) tuples, validated like `validate_windows`.

    Raises:
        ValueError: If a window is malformed, naming the bad part of `text`.
    """
    windows = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        bounds = [b.strip() for b in part.split(",")]
        if len(bounds) != 2 or not all(b.isdigit() for b in bounds):
            raise ValueError(
                f"bad profile window {part!r} in {text!r}: expected START,STOP "
                "with whole numbers, windows separated by ';' (e.g. '10,15;200,205')"
            )
        windows.append((int(bounds[0]), int(bounds[1])))
    return validate_windows(windows)


def validate_windows(windows: Sequence[Sequence[int]]) -> list[Window]:
    """Checks profile windows: 1-based, START <= STOP, sorted and non-overlapping.

    Args:
        windows: (start, stop) pairs of inclusive global step numbers.

    Returns:
        The windows as a list of int tuples.

    Raises:
        ValueError: If a window is malformed, out of order or overlaps another.
    """
    checked: list[Window] = []
    for window in windows:
        if len(window) != 2 or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in window
        ):
            raise ValueError(f"profile window must be a pair of ints (START, STOP), got {window!r}")
        start, stop = window
        if start < 1:
            raise ValueError(f"profile window {window!r}: START must be >= 1 (steps are 1-based)")
        if start > stop:
            raise ValueError(f"profile window {window!r}: START must be <= STOP")
        if checked and start <= checked[-1][1]:
            raise ValueError(
                f"profile windows must be sorted and must not overlap: "
                f"{window!r} comes after {checked[-1]!r}"
            )
        checked.append((start, stop))
    return checked
