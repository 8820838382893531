"""The report of `scripts/bench.py`: rows, paired ratios, the targets, Markdown and JSON.

Pure functions of the measured records (TensorFlow only in `environment()`).
"""

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("fit", "train_on_batch", "tape")
# The best hand-written loop of a mode, beside its plain baseline: one endless stream.
STREAM_BASELINES = {"harness-fit": "bare-fit-stream", "harness-tape": "bare-tape-ingraph"}


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for one figure of the main table: `figure` of `variant` (every
    variant where None) must be at least `low` / at most `high`."""

    name: str
    figure: str
    variant: str | None = None
    low: float | None = None
    high: float | None = None

    def holds(self, value: float) -> bool:
        """Whether `value` meets the goal."""
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


TARGETS = (
    Target("harness-fit >= 1.0x bare-fit", "vs_baseline", "harness-fit", low=1.0),
    Target(
        "harness-train_on_batch >= 1.0x bare-train_on_batch",
        "vs_baseline",
        "harness-train_on_batch",
        low=1.0,
    ),
    Target("harness-tape >= 0.95x ceiling", "vs_ceiling", "harness-tape", low=0.95),
    *(
        Target(
            f"harness-{mode}: default logging costs <= 3%",
            "logging_cost_pct",
            f"harness-{mode}",
            high=3.0,
        )
        for mode in MODES
    ),
    Target("no retracing after epoch 1", "retraces_after_first_epoch", high=0),
    Target("peak RSS <= 1.1x its baseline", "peak_rss_vs_baseline", high=1.1),
    Target(
        "RSS does not grow with epochs (ep2 -> last <= 16 MB)",
        "rss_growth_ep2_to_last_mb",
        high=16.0,
    ),
)


def median(values) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> dict:
    """Median, min, max and the values themselves (None left out)."""
    values = [v for v in values if v is not None]
    return {
        "median": median(values),
        "min": min(values, default=None),
        "max": max(values, default=None),
        "runs": values,
    }


def fmt(value, digits: int = 0) -> str:
    """A number for a table ("–" for None)."""
    return "–" if value is None else f"{value:,.{digits}f}"


def paired_median(row: dict) -> float | None:
    """The median of a row's paired ratios to its baseline (None without a baseline)."""
    return (row["vs_baseline_paired"] or {}).get("median")


def summarize(record: dict) -> dict:
    """Adds the per-run figures to a run's record (epochs after the first only)."""
    epochs, later = record["epochs"], record["epochs"][1:]
    examples = sum(e["examples"] for e in later)

    def total(key: str) -> float:
        return sum(e[key] for e in later)

    seconds = total("train_seconds")
    record.update(
        examples_per_second=examples / seconds if seconds > 0 else None,
        examples_per_cpu_second=(
            examples / total("train_cpu_seconds") if total("train_cpu_seconds") > 0 else None
        ),
        hook_share=total("hook_seconds") / seconds if seconds > 0 else None,
        gc_seconds=total("gc_seconds"),
        full_collections=total("full_collections"),
        traces_first_epoch=epochs[0]["traces"] if epochs else None,
        retraces_after_first_epoch=(
            sum(v - epochs[0]["traces"].get(k, 0) for k, v in epochs[-1]["traces"].items())
            if epochs
            else None
        ),
        rss_growth_ep2_to_last_mb=(
            epochs[-1]["rss_mb"] - epochs[1]["rss_mb"] if len(epochs) >= 3 else None
        ),
    )
    own = {int(k): v for k, v in (record.get("event_examples_per_second") or {}).items()}
    pairs = [(e["examples"], own[i + 1]) for i, e in enumerate(epochs) if i and own.get(i + 1)]
    if pairs:  # pooled like examples_per_second: the harness's seconds = examples / its rate
        record["event_examples_per_second"] = sum(n for n, _ in pairs) / sum(
            n / rate for n, rate in pairs
        )
    return record


def baseline_of(variant: str) -> str | None:
    """The bare loop a harness variant is compared with."""
    if variant.startswith("harness-"):
        return "bare-" + variant[len("harness-") :].replace("-nolog", "")
    return None


def paired(runs: dict, variant: str, other: str | None) -> dict | None:
    """The per-repeat ratios of examples/s (the two ran side by side in each repeat)."""
    if other not in runs:
        return None
    ratios = [
        a["examples_per_second"] / b["examples_per_second"]
        for a, b in zip(runs[variant], runs[other])
        if a and b and a.get("examples_per_second") and b.get("examples_per_second")
    ]
    return spread(ratios) if ratios else None


def table_rows(variants: list, runs: dict, memory: dict) -> dict:
    """One row per variant: examples/s with its spread, ratios of medians and paired
    ratios against its baseline, the ceiling and its `-nolog` twin, traces, memory."""
    rows = {}
    for v in variants:
        records = runs[v]
        share = median(r.get("hook_share") for r in records)
        timed_epochs = sum(len(r["epochs"]) - 1 for r in records)
        rows[v] = {
            "examples_per_second": spread(r.get("examples_per_second") for r in records),
            "examples_per_cpu_second": median(r.get("examples_per_cpu_second") for r in records),
            "hook_share_pct": None if share is None else 100 * share,
            "gc_ms_per_epoch": (
                1000 * sum(r["gc_seconds"] for r in records) / timed_epochs
                if timed_epochs
                else None
            ),
            "retraces_after_first_epoch": max(
                (r["retraces_after_first_epoch"] or 0 for r in records), default=None
            ),
            "traces_first_epoch": records[0]["traces_first_epoch"] if records else None,
            "trace_counts_reported": records[0].get("trace_counts") if records else None,
            "harness_event_examples_per_second": median(
                r.get("event_examples_per_second") for r in records
            ),
            **{
                key: (memory.get(v) or {}).get(key)
                for key in ("peak_rss_mb", "peak_growth_mb", "rss_growth_ep2_to_last_mb")
            },
        }

    def eps(variant):
        return rows.get(variant, {}).get("examples_per_second", {}).get("median")

    for v, row in rows.items():
        base, own = baseline_of(v), eps(v)
        nolog = v + "-nolog" if base and not v.endswith("-nolog") else None
        row["baseline"] = base
        for name, other in (
            ("vs_baseline", base),
            ("vs_ceiling", "ceiling"),
            ("vs_stream_baseline", STREAM_BASELINES.get(v)),
            ("vs_nolog", nolog),
        ):
            row[name] = own / eps(other) if own and eps(other) else None
            row[f"{name}_paired"] = paired(runs, v, other) if other != v else None
        row["stream_baseline"] = STREAM_BASELINES.get(v)
        row["logging_cost_pct"] = _cost(row["vs_nolog"])
        row["logging_cost_paired_pct"] = _cost((row["vs_nolog_paired"] or {}).get("median"))
        hooks_off = rows.get(nolog, {}).get("hook_share_pct")
        row["logging_cost_hooks_pct"] = (
            row["hook_share_pct"] - hooks_off
            if None not in (hooks_off, row["hook_share_pct"])
            else None
        )
        for key in ("peak_rss_mb", "peak_growth_mb"):
            theirs = rows.get(base, {}).get(key)
            row[key.replace("_mb", "_vs_baseline")] = (
                row[key] / theirs if row[key] and theirs else None
            )
    return rows


def _cost(ratio: float | None) -> float | None:
    """Logging cost in percent from the ratio logging on / logging off."""
    return None if ratio is None else 100 * (1 - ratio)


def ceiling_ratio(pairs: list) -> float:
    """Total ceiling time / total harness time over (epoch, steps, harness s, ceiling s)
    pairs: their throughputs' ratio over the same steps."""
    return sum(p[3] for p in pairs) / sum(p[2] for p in pairs)


def interleaved_summary(runs: list) -> dict | None:
    """harness-tape vs the ceiling from each run's pairs, in the order made."""
    pairs = [pair for run in runs for pair in run]
    if not pairs:
        return None
    longest = max(p[1] for p in pairs)
    per_run = [ceiling_ratio(run) for run in runs if run]
    firsts = [p for run in runs for i, p in enumerate(run) if not i or run[i - 1][0] != p[0]]
    return {
        "executions": len(pairs),
        "time_weighted": ceiling_ratio(pairs),
        "median": median(c / h for _, _, h, c in pairs),
        "full_executions": ceiling_ratio([p for p in pairs if p[1] == longest]),
        "first_executions": ceiling_ratio(firsts),  # right after the epoch-end work
        "runs": per_run,
        "min_run": min(per_run),
        "max_run": max(per_run),
        "pairs": pairs,
    }


def targets(rows: dict, interleaved: dict | None = None) -> list:
    """Each target checked: on the paired median where there is one (the two ran
    side by side, which a drifting machine affects less), else the plain figure;
    harness-tape vs the ceiling on the interleaved measurement when made."""
    checks = []
    for target in TARGETS:
        for variant in [target.variant] if target.variant else list(rows):
            row = rows.get(variant, {})
            value = row.get(target.figure)
            judged = (row.get(f"{target.figure}_paired") or {}).get("median")
            if target.figure == "logging_cost_pct":
                judged = row.get("logging_cost_paired_pct")
            shown = f"{fmt(judged, 3)} paired ({fmt(value, 3)} of medians)"
            if target.figure == "vs_ceiling" and interleaved:
                judged = interleaved["time_weighted"]
                shown = f"{fmt(judged, 3)} interleaved (whole runs: {shown})"
            if judged is None:
                judged, shown = value, fmt(value, 3)
            if judged is not None:
                name = target.name if target.variant else f"{variant}: {target.name}"
                checks.append(
                    {"target": name, "value": judged, "pass": target.holds(judged), "shown": shown}
                )
    return checks


# --- Markdown ---------------------------------------------------------------------------


def markdown_table(headers: list, rows: list) -> list:
    """A Markdown table, numbers right-aligned by the header's position after the first."""
    return ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows
    ]


def markdown_main(rows: dict, checks: list, interleaved: dict | None) -> list:
    """The main table, the interleaved measurement and the targets."""
    lines = markdown_table(
        [
            "variant",
            "examples/s (median)",
            "spread (min–max)",
            "vs baseline (paired)",
            "vs ceiling",
            "logging cost (paired)",
            "in the batch hooks",
            "examples per CPU-s",
            "GC ms per epoch",
            "retraces after ep1",
            "peak RSS MB (growth)",
            "peak RSS vs baseline",
            "RSS ep2→last MB",
        ],
        [
            [
                v,
                fmt(r["examples_per_second"]["median"]),
                f"{fmt(r['examples_per_second']['min'])}–{fmt(r['examples_per_second']['max'])}",
                f"{fmt(r['vs_baseline'], 3)} ({fmt(paired_median(r), 3)})"
                + (f" × {r['baseline']}" if r["baseline"] else ""),
                fmt(r["vs_ceiling"], 3),
                f"{fmt(r['logging_cost_pct'], 1)}% ({fmt(r['logging_cost_paired_pct'], 1)}%)",
                f"{fmt(r['hook_share_pct'], 2)}%",
                fmt(r["examples_per_cpu_second"]),
                fmt(r["gc_ms_per_epoch"], 1),
                fmt(r["retraces_after_first_epoch"]),
                f"{fmt(r['peak_rss_mb'])} ({fmt(r['peak_growth_mb'])})",
                fmt(r["peak_rss_vs_baseline"], 3),
                fmt(r["rss_growth_ep2_to_last_mb"], 1),
            ]
            for v, r in rows.items()
        ],
    )
    if interleaved:
        lines += [
            "",
            "**harness-tape vs the ceiling, interleaved** (the ceiling's step run "
            "on one in-memory batch after each harness execution, same model): "
            f"{interleaved['executions']} executions after epoch 1, ceiling time / "
            f"harness time {fmt(interleaved['time_weighted'], 3)} (per run "
            f"{fmt(interleaved['min_run'], 3)}–{fmt(interleaved['max_run'], 3)}; "
            f"median per execution {fmt(interleaved['median'], 3)}; whole executions "
            f"{fmt(interleaved['full_executions'], 3)}; each epoch's first execution "
            f"{fmt(interleaved['first_executions'], 3)}).",
        ]
    return (
        lines
        + [""]
        + markdown_table(
            ["target", "measured", "result"],
            [[c["target"], c["shown"], "pass" if c["pass"] else "FAIL"] for c in checks],
        )
    )


def markdown_knobs(rows: list) -> list:
    """knob x mode: examples/s (paired speed-up vs the mode's defaults, its spread)."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    cell = {(r["mode"], r["knob"]): r for r in rows}

    def text(r: dict) -> str:
        if r["note"]:
            return r["note"].split(":")[0]
        if r.get("speedup") is None:
            return fmt(r.get("examples_per_second"))
        return (
            f"{fmt(r['examples_per_second'])} ({fmt(r['speedup'], 2)}×; "
            f"{fmt(r['speedup_min'], 2)}–{fmt(r['speedup_max'], 2)})"
        )

    knobs = list(dict.fromkeys(r["knob"] for r in rows))
    notes = sorted({r["note"] for r in rows if (r["note"] or "").startswith("rejected")})
    return (
        markdown_table(["knob", *modes], [[k, *(text(cell[(m, k)]) for m in modes)] for k in knobs])
        + [""]
        + [f"- {note}" for note in notes]
    )


def environment() -> dict:
    """Versions, CPUs, the commit and the date."""
    import keras
    import tensorflow as tf

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "harness", "callbacks")),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


NOTES = (
    "Examples/s: training examples / training seconds (epoch begin to the start of "
    "validation) over the epochs after the first, the variants interleaved in a new seeded "
    "order every repeat. bare-*: plain Keras on the harness's data and model; ceiling: the "
    "tape step in a `tf.range` loop on one in-memory batch. Paired: the median of the "
    "per-repeat ratios. In the batch hooks: the share of training time spent in "
    "`CallbackList.on_train_batch_begin/end`. Peak RSS: VmHWM of a fresh subprocess per "
    "variant (--memory=subprocess), growth = peak minus the RSS after importing TensorFlow."
)


def write_report(out: str, result: dict, command: str) -> None:
    """Writes bench.json and bench.md to `out` and prints the Markdown."""
    env = environment()
    md = [
        f"# Benchmark ({env['date']})",
        "",
        f"`{command}`",
        "",
        f"TF {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}, "
        f"{env['cpus']} CPUs; repo {env['git_commit']}"
        + (" + uncommitted harness/callbacks changes" if env["git_dirty"] else "")
        + ".",
        "",
        f"Settings: {result['settings']}",
        "",
    ]
    if "main" in result:
        main = result["main"]
        md += [
            "## Throughput, traces and memory",
            "",
            *markdown_main(main["rows"], result["targets"], main["interleaved_tape"]),
            "",
            NOTES,
            "",
        ]
    for kind, rows in result.get("scaling", {}).get("tables", {}).items():
        md += [
            f"## Scaling over {kind}",
            "",
            *markdown_table(
                [kind, "variant", "examples/s", "spread", "peak RSS MB", "growth MB", "retraces"],
                [
                    [
                        r[kind],
                        r["variant"],
                        fmt(r["examples_per_second"]),
                        f"{fmt(r['min'])}–{fmt(r['max'])}",
                        fmt(r["peak_rss_mb"]),
                        fmt(r["peak_growth_mb"]),
                        fmt(r["retraces_after_first_epoch"]),
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
    if "knobs" in result:
        md += [
            "## Knobs",
            "",
            "The harness with default logging in each mode: examples/s and "
            "the paired speed-up against that mode's defaults; the thread knobs run in "
            "fresh subprocesses, paired with 'defaults, own process'.",
            "",
            *markdown_knobs(result["knobs"]["rows"]),
            "",
        ]
    errors = [
        e for part in ("main", "scaling", "knobs") for e in result.get(part, {}).get("errors", [])
    ]
    md += ["## Failures", "", *(f"- {e['error']}" for e in errors), ""] if errors else []
    result.update(command=command, environment=env)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md[6:]))
    print(f"bench: wrote {out}/bench.json and {out}/bench.md")
