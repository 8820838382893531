"""A capture's tables (see `profile_xprof`) rendered as text, Markdown and CSV.

Text output cuts long op and kernel names so a terminal row stays readable;
Markdown and CSV keep them whole. `write_tables` saves the CSV and Markdown
files next to a capture.
"""

import csv
import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .profile_xprof import KernelRow, OpRow, ProfileTables, StepRow

_NO_KERNELS_CPU = "no GPU kernels traced (CPU-only capture)"
_NO_KERNELS = "no GPU kernels traced"
_NO_STEPS = "no steps found (the capture holds no step markers)"
# Text output cuts longer names (CSV and Markdown keep them whole).
_OP_NAME_WIDTH = 80
_KERNEL_NAME_WIDTH = 110
_STEP_HEADERS = ("step", "step ms", "compute ms", "input ms", "other ms")
_OP_HEADERS = ("side", "type", "name", "count", "self us", "avg self us", "share")
_KERNEL_HEADERS = (
    "kernel",
    "count",
    "total us",
    "avg us",
    "grid",
    "block",
    "TC used",
    "TC eligible",
    "TF op",
)


def format_tables(tables: ProfileTables) -> str:
    """Renders the tables as aligned plain text, e.g. for a terminal or a log.

    Args:
        tables: Tables from `build_tables`.

    Returns:
        A multi-line string (no trailing newline).
    """
    lines = [f"Profile of {', '.join(tables.sources)}", "", _step_summary(tables)]
    if tables.steps:
        lines += _grid(_STEP_HEADERS, [_step_cells(step) for step in tables.steps])
    lines += ["", f"Top {len(tables.ops)} ops by self time (framework_op_stats, idle excluded):"]
    lines += _grid(_OP_HEADERS, [_op_cells(op, shorten=True) for op in tables.ops])
    lines += ["", "GPU kernels (kernel_stats):"]
    if tables.kernels:
        lines += _grid(_KERNEL_HEADERS, [_kernel_cells(k, shorten=True) for k in tables.kernels])
    else:
        lines.append("  " + _no_kernels_text(tables))
    return "\n".join(lines)


def write_tables(tables: ProfileTables, out_dir: str | os.PathLike) -> list[Path]:
    """Saves each table as CSV plus all of them as one Markdown file.

    Args:
        tables: Tables from `build_tables`.
        out_dir: Folder to write into (created if missing); the callback uses
            the capture's own session folder.

    Returns:
        The written files: `profile_ops.csv`, `profile_kernels.csv`,
        `profile_steps.csv` and `profile_tables.md`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        _write_csv(out_dir / "profile_ops.csv", OpRow, tables.ops),
        _write_csv(out_dir / "profile_kernels.csv", KernelRow, tables.kernels),
        _write_csv(out_dir / "profile_steps.csv", StepRow, tables.steps),
    ]
    markdown = out_dir / "profile_tables.md"
    markdown.write_text(_markdown(tables), encoding="utf-8")
    return written + [markdown]


def _short_op_name(name: str) -> str:
    """Keeps the end of a long op name: the innermost scopes say the most."""
    return name if len(name) <= _OP_NAME_WIDTH else "..." + name[3 - _OP_NAME_WIDTH :]


def _short_kernel_name(name: str) -> str:
    """Drops a kernel's return type, parameter list and namespaces, then cuts it."""
    name = name.removeprefix("void ")
    depth = 0
    for i, char in enumerate(name):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "(" and depth == 0:
            name = name[:i]
            break
    name = re.sub(r"\b\w+::", "", name).replace(" const", "")
    return name if len(name) <= _KERNEL_NAME_WIDTH else name[: _KERNEL_NAME_WIDTH - 3] + "..."


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _step_summary(tables: ProfileTables) -> str:
    if not tables.steps:
        return f"Step time (overview_page): {_NO_STEPS}"
    steps = f"{tables.step_count} step{'s' if tables.step_count != 1 else ''}"
    return (
        f"Step time (overview_page, {tables.hardware_type or 'unknown hardware'}): "
        f"{steps}, avg {tables.avg_step_ms:.3f} ms; "
        f"compute {_percent(tables.compute_share)}, input {_percent(tables.input_share)}, "
        f"other {_percent(tables.other_share)}"
    )


def _no_kernels_text(tables: ProfileTables) -> str:
    return _NO_KERNELS_CPU if tables.hardware_type in ("", "CPU_ONLY") else _NO_KERNELS


def _step_cells(step: StepRow) -> tuple[str, ...]:
    return (
        step.step,
        f"{step.step_ms:.3f}",
        f"{step.compute_ms:.3f}",
        f"{step.input_ms:.3f}",
        f"{step.other_ms:.3f}",
    )


def _op_cells(op: OpRow, *, shorten: bool) -> tuple[str, ...]:
    return (
        op.side,
        op.op_type,
        _short_op_name(op.op_name) if shorten else op.op_name,
        str(op.count),
        f"{op.total_self_us:.1f}",
        f"{op.avg_self_us:.1f}",
        _percent(op.self_share),
    )


def _kernel_cells(kernel: KernelRow, *, shorten: bool) -> tuple[str, ...]:
    return (
        _short_kernel_name(kernel.kernel_name) if shorten else kernel.kernel_name,
        str(kernel.count),
        f"{kernel.total_us:.1f}",
        f"{kernel.avg_us:.1f}",
        kernel.grid,
        kernel.block,
        _yes_no(kernel.uses_tensor_cores),
        _yes_no(kernel.tensor_core_eligible),
        kernel.op_name or "-",
    )


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligns cells into columns: text left-aligned, numbers right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                cell.rjust(width) if is_num else cell.ljust(width)
                for cell, width, is_num in zip(cells, widths, numeric)
            ).rstrip()
        )

    return [line(headers)] + [line(row) for row in rows]


def _is_number(cell: str) -> bool:
    try:
        float(cell.rstrip("%"))
    except ValueError:
        return False
    return True


def _write_csv(path: Path, row_type: type, rows: Sequence[Any]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(field.name for field in dataclasses.fields(row_type))
        writer.writerows(dataclasses.astuple(row) for row in rows)
    return path


def _markdown(tables: ProfileTables) -> str:
    def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        return [line(headers), line(["---"] * len(headers))] + [line(row) for row in rows]

    def code(text: str) -> str:
        return f"`{text}`" if text and text != "-" else text

    sources = ", ".join(f"`{source}`" for source in tables.sources)
    parts = ["# Profile tables", "", f"Capture: {sources}", "", "## Step time", ""]
    parts.append(_step_summary(tables))
    if tables.steps:
        parts += [""] + table(_STEP_HEADERS, map(_step_cells, tables.steps))
    parts += ["", "## Top ops by self time (idle excluded)", ""]
    parts += table(
        _OP_HEADERS,
        (
            (cells[0], cells[1], code(cells[2]), *cells[3:])
            for cells in (_op_cells(op, shorten=False) for op in tables.ops)
        ),
    )
    parts += ["", "## GPU kernels", ""]
    if tables.kernels:
        parts += table(
            _KERNEL_HEADERS,
            (
                (code(cells[0]), *cells[1:-1], code(cells[-1]))
                for cells in (_kernel_cells(k, shorten=False) for k in tables.kernels)
            ),
        )
    else:
        parts.append(_no_kernels_text(tables))
    return "\n".join(parts) + "\n"
