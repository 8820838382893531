"""A profiler capture converted into rows of three tables by xprof's own converters.

A capture is the set of `<host>.xplane.pb` files in one
`<run_dir>/plugins/profile/<session>/` folder. `build_tables` runs xprof's
`framework_op_stats`, `kernel_stats` and `overview_page` tools on it (the same
converters behind TensorBoard's Profile tab) and keeps three small tables:

- the top TF ops by self time (host and device, idle time excluded),
- the GPU kernels (empty for a CPU-only capture),
- the step-time breakdown (one row per step marker seen in the capture, except
  the padding steps of `ProfilerCallback`).

`profile_render` turns them into text, Markdown and CSV.

xprof writes cache files (`ALL_HOSTS.op_stats_v2.pb`, ...) next to the files it
reads, so the converters run on symlinks in a scratch folder: the capture's own
folder is never written to, and a stale cache is never read.

xprof is imported only when a capture is converted: it adds ~20 MB to the
resident memory of every process that imports it, and most runs never profile.

xprof's C++ library logs "E... No UnifiedProfileProcessor registered for tool:
kernel_stats" on every `kernel_stats` conversion, then falls back to the
converter that works (its next line, a warning, says so). That library has its
own copy of TF's logging, which reads `TF_CPP_MIN_LOG_LEVEL` once, when it
loads; so where that level already hides warnings (2, as the harness sets it),
the library is loaded with 3 and the spurious error is not printed. TF's own
C++ log keeps its level, and conversion failures still reach Python.
"""

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

XPLANE_SUFFIX = ".xplane.pb"
# The name of the step markers `ProfilerCallback` puts around a long window for
# xprof to drop; the step table leaves out any that xprof keeps.
PADDING_STEP = "profile_padding"


@dataclasses.dataclass(frozen=True)
class OpRow:
    """One TF op from `framework_op_stats`.

    Attributes:
        side: "Host" or "Device".
        op_type: The op type, e.g. "MatMul" or "_MklNativeFusedConv2D".
        op_name: The op's full name, e.g. "StatefulPartitionedCall/.../MatMul".
        count: How many times it ran in the capture.
        total_self_us: Total self time (time not spent in child ops), microseconds.
        avg_self_us: Average self time per occurrence, microseconds.
        self_share: Fraction of all self time on the same side, idle excluded
            (xprof's own figure, as shown in the Profile tab).
    """

    side: str
    op_type: str
    op_name: str
    count: int
    total_self_us: float
    avg_self_us: float
    self_share: float


@dataclasses.dataclass(frozen=True)
class KernelRow:
    """One GPU kernel from `kernel_stats`, aggregated over its launches.

    Attributes:
        kernel_name: The (demangled) kernel name.
        count: Number of launches.
        total_us: Total kernel time, microseconds.
        avg_us: Average time per launch, microseconds.
        uses_tensor_cores: Whether the kernel used TensorCores.
        tensor_core_eligible: Whether the launching op could use TensorCores.
        op_name: The TF op that launched the kernel ("" when the capture has no link).
        grid: Grid dimensions, e.g. "160,1,1" (xprof keeps launches with
            different dimensions apart, so one name can appear on several rows).
        block: Block dimensions, e.g. "1024,1,1".
    """

    kernel_name: str
    count: int
    total_us: float
    avg_us: float
    uses_tensor_cores: bool
    tensor_core_eligible: bool
    op_name: str
    grid: str
    block: str


@dataclasses.dataclass(frozen=True)
class StepRow:
    """One step of `overview_page`'s step-time graph, in milliseconds.

    Attributes:
        step: The step's label (e.g. "train 3" for a `Trace("train", step_num=3)`).
        step_ms: Total step time.
        compute_ms: Device compute plus host compute.
        input_ms: Time waiting for input.
        other_ms: Everything else (kernel launch, transfers, collectives,
            compilation, output and unattributed time).
    """

    step: str
    step_ms: float
    compute_ms: float
    input_ms: float
    other_ms: float


@dataclasses.dataclass(frozen=True)
class ProfileTables:
    """The three tables of one capture.

    Attributes:
        sources: The `.xplane.pb` files the tables were built from.
        hardware_type: xprof's hardware type, e.g. "CPU_ONLY" or "GPU".
        ops: Top ops by total self time, largest first.
        kernels: Top GPU kernels by total time, largest first.
        steps: The captured steps, in order.
    """

    sources: tuple[str, ...]
    hardware_type: str
    ops: tuple[OpRow, ...]
    kernels: tuple[KernelRow, ...]
    steps: tuple[StepRow, ...]

    @property
    def step_count(self) -> int:
        """Number of steps in the capture."""
        return len(self.steps)

    @property
    def avg_step_ms(self) -> float:
        """Mean step time in milliseconds (0.0 without steps)."""
        return self._total("step_ms") / len(self.steps) if self.steps else 0.0

    @property
    def compute_share(self) -> float:
        """Fraction of step time spent computing."""
        return self._share("compute_ms")

    @property
    def input_share(self) -> float:
        """Fraction of step time spent waiting for input."""
        return self._share("input_ms")

    @property
    def other_share(self) -> float:
        """Fraction of step time spent on everything else."""
        return self._share("other_ms")

    def _total(self, field: str) -> float:
        return sum(getattr(step, field) for step in self.steps)

    def _share(self, field: str) -> float:
        total = self._total("step_ms")
        return self._total(field) / total if total else 0.0


def find_captures(path: str | os.PathLike) -> list[tuple[Path, ...]]:
    """Finds the captures under a run dir, a session folder or a single file.

    Args:
        path: A run directory (or any folder above `plugins/profile/`), one
            `plugins/profile/<session>` folder, or one `.xplane.pb` file.

    Returns:
        One tuple of `.xplane.pb` paths (one per host) per capture folder,
        oldest first (session folders are named by their start timestamp).
        Empty if the folder holds no capture.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If `path` is a file that is not an `.xplane.pb`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_file():
        if not path.name.endswith(XPLANE_SUFFIX):
            raise ValueError(f"not a profiler capture (expected *{XPLANE_SUFFIX}): {path}")
        return [(path,)]
    by_folder: dict[Path, list[Path]] = {}
    for xplane in path.rglob(f"*{XPLANE_SUFFIX}"):
        by_folder.setdefault(xplane.parent, []).append(xplane)
    folders = sorted(by_folder, key=lambda folder: (folder.name, str(folder)))
    return [tuple(sorted(by_folder[folder])) for folder in folders]


def build_tables(xplane_paths: Sequence[str | os.PathLike], *, top: int = 20) -> ProfileTables:
    """Builds the op, kernel and step tables of one capture with xprof's converters.

    Args:
        xplane_paths: The `.xplane.pb` files of one capture (one per host).
        top: How many ops and kernels to keep.

    Returns:
        The capture's tables.

    Raises:
        ValueError: If no path is given, a file is empty, two paths share a
            file name, or `top` < 1.
        RuntimeError: If xprof cannot convert the capture.
    """
    paths = [Path(p).resolve() for p in xplane_paths]
    if not paths:
        raise ValueError("xplane_paths is empty: give at least one .xplane.pb file")
    if len({p.name for p in paths}) != len(paths):
        raise ValueError(f"xplane_paths must have distinct file names, got {paths}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    for path in paths:
        if path.stat().st_size == 0:
            raise ValueError(f"empty capture file: {path}")
    sources = tuple(str(p) for p in paths)
    with tempfile.TemporaryDirectory(prefix="profile_xprof_") as scratch:
        linked = [str(_link_into(path, Path(scratch))) for path in paths]
        op_stats, kernel_stats, overview = [
            _tool_json(linked, tool, sources)
            for tool in ("framework_op_stats", "kernel_stats", "overview_page")
        ]
    step_table = _step_table(overview)
    return ProfileTables(
        sources=sources,
        hardware_type=step_table.get("p", {}).get("hardware_type", ""),
        ops=_op_rows(op_stats)[:top],
        kernels=_kernel_rows(kernel_stats)[:top],
        steps=_step_rows(step_table),
    )


def _link_into(path: Path, folder: Path) -> Path:
    """Symlinks (or, where that fails, copies) `path` into `folder`."""
    target = folder / path.name
    try:
        target.symlink_to(path)
    except OSError:
        shutil.copyfile(path, target)
    return target


def _tool_json(paths: list[str], tool: str, sources: Sequence[str]) -> Any:
    """Runs one xprof tool on `paths` (copies of `sources`) and parses its JSON."""
    data, _ = _xprof_converter().xspace_to_tool_data(paths, tool, {})
    if data is None:
        raise RuntimeError(f"xprof could not build '{tool}' from {', '.join(sources)}")
    return json.loads(data)


def _xprof_converter():
    """xprof's `raw_to_tool_data`, its C++ library loaded with errors hidden where
    warnings are (see the module docstring)."""
    if "xprof.convert.raw_to_tool_data" in sys.modules:
        return sys.modules["xprof.convert.raw_to_tool_data"]
    name = "TF_CPP_MIN_LOG_LEVEL"
    level = os.environ.get(name)
    quiet = level is not None and level.strip().isdigit() and int(level) >= 2
    if quiet:
        os.environ[name] = "3"
    try:
        from xprof.convert import raw_to_tool_data  # ~20 MB resident: only when converting
    finally:
        if quiet:
            os.environ[name] = level
    return raw_to_tool_data


def _records(table: dict) -> list[dict[str, Any]]:
    """Turns a Google-Charts-style data table ({cols, rows}) into dicts keyed by column id."""
    ids = [col["id"] for col in table.get("cols", [])]
    return [
        {key: (cell or {}).get("v") for key, cell in zip(ids, row.get("c", []))}
        for row in table.get("rows", [])
    ]


def _op_rows(op_stats: list[dict]) -> tuple[OpRow, ...]:
    # xprof returns the table twice: with idle time and without; keep the idle-free one.
    records = next(
        (recs for recs in map(_records, op_stats) if all(r["type"] != "IDLE" for r in recs)),
        [],
    )
    rows = [
        OpRow(
            side=r["host_or_device"],
            op_type=r["type"],
            op_name=r["operation"],
            count=int(r["occurrences"]),
            total_self_us=r["total_self_time"],
            avg_self_us=r["avg_self_time"],
            self_share=r[
                "device_total_self_time_percent"
                if r["host_or_device"] == "Device"
                else "host_total_self_time_percent"
            ],
        )
        for r in records
    ]
    return tuple(sorted(rows, key=lambda row: -row.total_self_us))


def _kernel_rows(kernel_stats: dict) -> tuple[KernelRow, ...]:
    rows = [
        KernelRow(
            kernel_name=r["kernel_name"],
            count=int(r["occurrences"]),
            total_us=r["total_duration_us"],
            avg_us=r["avg_duration_us"],
            uses_tensor_cores=bool(r["is_kernel_using_tensor_core"]),
            tensor_core_eligible=bool(r["is_op_tensor_core_eligible"]),
            op_name=r["op_name"] or "",
            grid=r["grid_dim"],
            block=r["block_dim"],
        )
        for r in _records(kernel_stats)
    ]
    return tuple(sorted(rows, key=lambda row: -row.total_us))


def _step_table(overview: list[dict]) -> dict:
    """The overview page's step-time graph: the table with a `stepnum` column."""
    for table in overview:
        if any(col.get("id") == "stepnum" for col in table.get("cols", [])):
            return table
    return {}


_COMPUTE_COLUMNS = ("deviceComputeTimeMs", "hostComputeTimeMs")
_INPUT_COLUMNS = ("infeedTimeMs",)
_OTHER_COLUMNS = (
    "deviceToDeviceTimeMs",
    "deviceCollectivesTimeMs",
    "kernelLaunchTimeMs",
    "outfeedTimeMs",
    "compileTimeMs",
    "otherTimeMs",
)


def _step_rows(step_table: dict) -> tuple[StepRow, ...]:
    def total(record: dict, columns: Iterable[str]) -> float:
        return sum(record.get(column) or 0.0 for column in columns)

    return tuple(
        StepRow(
            step=str(r["stepnum"]),
            step_ms=r["stepTimeMs"],
            compute_ms=total(r, _COMPUTE_COLUMNS),
            input_ms=total(r, _INPUT_COLUMNS),
            other_ms=total(r, _OTHER_COLUMNS),
        )
        for r in _records(step_table)
        if not str(r["stepnum"]).startswith(f"{PADDING_STEP} ")
    )
