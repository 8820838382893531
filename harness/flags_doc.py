"""docs/flags.md's flag tables, written from the `Config` fields that define the flags.

`python -m harness.flags_doc --write` rewrites the part of docs/flags.md between
the `<!-- flags:start -->` and `<!-- flags:end -->` markers; without --write it
exits 1 if that part is stale (tests/test_options.py checks it too).
"""

import argparse
import dataclasses
import pathlib
import sys

from harness.config import GROUPS, Config
from harness.options import help_text

FLAGS_DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "flags.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"


def tables() -> str:
    """The Markdown tables of every flag, one per group, in field order."""
    parts = []
    for group in GROUPS:
        rows = [
            f"| `--{field.name}` | {_default(field)} | {_cell(help_text(field))} |"
            for field in dataclasses.fields(Config)
            if field.metadata["group"] == group
        ]
        parts.append(
            "\n".join([f"**{group}**", "", "| flag | default | meaning |", "|---|---|---|", *rows])
        )
    return "\n\n".join(parts)


def updated(text: str) -> str:
    """`text` with the tables between the markers replaced by `tables()`."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise ValueError(f"docs/flags.md lacks the markers {START} ... {END}")
    return f"{head}{START}\n{tables()}\n{END}{tail}"


def _default(field: dataclasses.Field) -> str:
    """The default column: the field's `shown` text, or its default written out."""
    value = field.default
    if field.metadata["shown"]:
        return _cell(field.metadata["shown"])
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == ():
        return "–"
    if isinstance(value, (str, tuple)):
        return f"`{value if isinstance(value, str) else ','.join(map(str, value))}`"
    return str(value)


def _cell(text: str) -> str:
    """`text` made safe in a table cell: '|' and '<' are Markdown there."""
    return text.replace("|", "\\|").replace("<", "\\<")


def main(argv: list) -> int:
    """Writes (--write) or checks docs/flags.md's flag tables; 1 when stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/flags.md in place")
    args = parser.parse_args(argv)
    current = FLAGS_DOC.read_text()
    fresh = updated(current)
    if args.write:
        FLAGS_DOC.write_text(fresh)
    elif fresh != current:
        print(f"{FLAGS_DOC} is stale: run python -m harness.flags_doc --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
