"""The report of `scripts/bench.py`: ratios, the issue's targets, Markdown and JSON.

Pure functions of the measured records (no TensorFlow until `environment()`).
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REUTERS_TRAIN = 8982
MODES = ("fit", "train_on_batch", "tape")
# Harness options TensorFlow fixes when it starts: a knob setting them runs each time in a
# fresh subprocess, paired with the defaults run the same way (OWN_PROCESS_DEFAULTS).
THREAD_FIELDS = ("intra_op_threads", "inter_op_threads")
OWN_PROCESS_DEFAULTS = "defaults, own process"


def own_process(knob: str, fields) -> bool:
    """Whether the knob's runs each need a fresh process."""
    return knob == OWN_PROCESS_DEFAULTS or bool(set(fields or ()) & set(THREAD_FIELDS))
MEMORY_NOTE = (
    "Peak RSS: each variant runs once more in a fresh subprocess (same settings) "
    "that reads its own high-water mark VmHWM from /proc/self/status. Not ru_maxrss: "
    "Linux carries the parent's peak into a child across fork+exec, so a child's "
    "ru_maxrss is at least the benchmark process's RSS. 'growth' = peak minus the RSS "
    "after importing TensorFlow and Keras (the harness's own imports count as growth). "
    "In-process numbers are useless for this: ru_maxrss never decreases, and memory "
    "freed by one variant is reused by the next. 'RSS ep2->last' = RSS at the end of "
    "the last epoch minus at the end of epoch 2, in that subprocess.")
INPROCESS_NOTE = (
    "Peak RSS (--memory=inprocess): the high-water mark is reset before each run "
    "(/proc/self/clear_refs) and read after it; growth is relative to the RSS before "
    "the run, in a process that has already run other variants (only indicative; "
    "the baselines' data is loaded before, the harness loads its own inside).")


# The best hand-written loop of a mode, shown beside its plain baseline: one endless
# input stream (like the harness's), and for tape the batches pulled inside the
# compiled call.
STREAM_BASELINES = {"harness-fit": "bare-fit-stream", "harness-tape": "bare-tape-ingraph"}


def baseline_of(variant: str):
    """The bare baseline a harness variant is compared with (tape: the bare tape loop)."""
    if variant.startswith("harness-"):
        return "bare-" + variant[len("harness-"):].replace("-nolog", "")
    return None


def table_rows(variants, runs, memory) -> dict:
    rows = {}
    for v in variants:
        values = [r["examples_per_second"] for r in runs[v] if r.get("examples_per_second")]
        rows[v] = {"examples_per_second": {
            "median": median(values), "min": min(values, default=None),
            "max": max(values, default=None), "runs": values}}
        rows[v]["examples_per_second_fast"] = fast_epochs(runs[v])
        share = median([r.get("hook_share") for r in runs[v]])
        rows[v]["hook_share_pct"] = 100 * share if share is not None else None
        rows[v]["examples_per_cpu_second"] = median(
            [r.get("examples_per_cpu_second") for r in runs[v]])
        timed_epochs = sum(max(0, len(r.get("epochs", [])) - 1) for r in runs[v])
        rows[v]["gc_ms_per_epoch"] = (1000 * sum(r.get("gc_seconds", 0) for r in runs[v])
                                      / timed_epochs if timed_epochs else None)
        rows[v]["full_collections"] = sum(r.get("full_collections", 0) for r in runs[v])
        rows[v]["retraces_after_first_epoch"] = max(
            (r.get("retraces_after_first_epoch") or 0 for r in runs[v]), default=None)
        rows[v]["traces_first_epoch"] = runs[v][0].get("traces_first_epoch") if runs[v] else None
        rows[v]["trace_counts_reported"] = runs[v][0].get("trace_counts") if runs[v] else None
        rows[v]["harness_event_examples_per_second"] = median(
            [r.get("event_examples_per_second_pooled") for r in runs[v]])
        mem = memory.get(v) or {}
        rows[v]["peak_rss_mb"] = mem.get("peak_rss_mb")
        rows[v]["peak_growth_mb"] = mem.get("peak_growth_mb")
        rows[v]["rss_growth_ep2_to_last_mb"] = mem.get("rss_growth_ep2_to_last_mb")
    for v, row in rows.items():
        med = row["examples_per_second"]["median"]
        base = baseline_of(v)
        row["baseline"] = base
        row["vs_baseline"] = _ratio(med, _get(rows, base))
        row["vs_baseline_paired"] = _paired(runs, v, base)
        row["vs_ceiling"] = _ratio(med, _get(rows, "ceiling"))
        row["vs_ceiling_paired"] = _paired(runs, v, "ceiling") if v != "ceiling" else None
        fast = row["examples_per_second_fast"]
        row["vs_baseline_fast"] = _ratio(fast, _get(rows, base, "examples_per_second_fast"))
        row["vs_ceiling_fast"] = _ratio(fast, _get(rows, "ceiling", "examples_per_second_fast"))
        cpu = row["examples_per_cpu_second"]
        row["cpu_vs_baseline"] = _ratio(cpu, _get(rows, base, "examples_per_cpu_second"))
        row["cpu_vs_ceiling"] = _ratio(cpu, _get(rows, "ceiling", "examples_per_cpu_second"))
        stream = STREAM_BASELINES.get(v.replace("-nolog", ""))
        if stream in rows:
            row["stream_baseline"] = stream
            row["vs_stream_baseline"] = _ratio(med, _get(rows, stream))
            row["vs_stream_baseline_paired"] = _paired(runs, v, stream)
            row["vs_stream_baseline_fast"] = _ratio(
                fast, _get(rows, stream, "examples_per_second_fast"))
        nolog = v + "-nolog" if v.startswith("harness-") and "nolog" not in v else None
        off = _get(rows, nolog)
        row["logging_cost_pct"] = (100 * (1 - med / off)) if med and off else None
        paired_off = _paired(runs, v, nolog)
        row["logging_cost_paired_pct"] = (100 * (1 - paired_off["median"])
                                          if paired_off else None)
        hooks_off = rows.get(nolog, {}).get("hook_share_pct")
        row["logging_cost_hooks_pct"] = (
            row["hook_share_pct"] - hooks_off
            if None not in (hooks_off, row["hook_share_pct"]) else None)
        fast_off = _get(rows, nolog, "examples_per_second_fast")
        row["logging_cost_fast_pct"] = 100 * (1 - fast / fast_off) if fast and fast_off else None
        if base in rows and row["peak_rss_mb"] and rows[base]["peak_rss_mb"]:
            row["peak_rss_vs_baseline"] = row["peak_rss_mb"] / rows[base]["peak_rss_mb"]
            if row["peak_growth_mb"] and rows[base]["peak_growth_mb"]:
                row["peak_growth_vs_baseline"] = (row["peak_growth_mb"]
                                                  / rows[base]["peak_growth_mb"])
    return rows


FAST_PERCENTILE = 90


def fast_epochs(records) -> float:
    """The 90th percentile of the examples/s of single timed epochs, pooled over repeats.

    This machine's noise is one-sided: it flips between a fast and a slow state
    every few seconds (the same steps take ~2.4 or ~3.2 ms), so a variant's
    epochs that ran entirely in the fast state tell what its work costs.
    """
    rates = sorted(e["examples"] / e["train_seconds"] for r in records
                   for e in r.get("epochs", [])[1:] if e.get("train_seconds"))
    if not rates:
        return None
    return rates[min(len(rates) - 1, round(FAST_PERCENTILE / 100 * (len(rates) - 1)))]


def _paired(runs, variant, base):
    """Per-repeat ratios (the variants of one repeat ran side by side)."""
    if not base or base not in runs:
        return None
    pairs = [a["examples_per_second"] / b["examples_per_second"]
             for a, b in zip(runs[variant], runs[base])
             if a.get("examples_per_second") and b.get("examples_per_second")]
    return {"median": median(pairs), "min": min(pairs), "max": max(pairs)} if pairs else None


def knob_rows(cells: list, runs: dict) -> list:
    """One row per (mode, knob): examples/s and the speed-up against the same mode's
    defaults, paired per repeat (None records are failed runs); the knobs run in
    their own process are paired with the defaults run in their own process."""
    rows = []
    for mode, knob, fields, note in cells:
        row = {"mode": mode, "knob": knob, "fields": fields, "note": note}
        records = runs.get((mode, knob))
        if records is not None:
            rates = [r and r.get("examples_per_second") for r in records]
            reference = OWN_PROCESS_DEFAULTS if own_process(knob, fields) else "defaults"
            defaults = [r and r.get("examples_per_second") for r in runs[(mode, reference)]]
            speedups = [a / b for a, b in zip(rates, defaults) if a and b]
            values = [v for v in rates if v]
            row.update(examples_per_second=median(values), min=min(values, default=None),
                       max=max(values, default=None), runs=rates,
                       speedup=median(speedups),
                       speedup_min=min(speedups, default=None),
                       speedup_max=max(speedups, default=None),
                       retraces_after_first_epoch=max(
                           (r.get("retraces_after_first_epoch") or 0 for r in records if r),
                           default=None))
        rows.append(row)
    return rows


def ceiling_ratio(pairs: list) -> float:
    """Total ceiling time / total harness time over (epoch, steps, harness s, ceiling s)
    pairs: the ratio of their throughputs over the same steps (a per-execution median
    over-weights short executions)."""
    return sum(c for _, _, _, c in pairs) / sum(h for _, _, h, _ in pairs)


def interleaved_summary(runs: list) -> dict:
    """harness-tape vs the ceiling from each run's (epoch, steps, harness s, ceiling s)
    pairs, in the order the run made them."""
    pairs = [pair for run in runs for pair in run]
    if not pairs:
        return None
    ratios = sorted(ceiling / harness for _, _, harness, ceiling in pairs)
    harness = sorted(h / n for _, n, h, _ in pairs)
    ceiling = sorted(c / n for _, n, _, c in pairs)

    def p10(values):
        return values[round(0.1 * (len(values) - 1))]

    longest = max(n for _, n, _, _ in pairs)
    per_run = [ceiling_ratio(run) for run in runs if run]
    return {"executions": len(pairs),
            "time_weighted": ceiling_ratio(pairs),
            "median": median(ratios),
            "full_executions": ceiling_ratio([p for p in pairs if p[1] == longest]),
            # each epoch's first execution, right after the epoch-end work
            "first_executions": ceiling_ratio(
                [p for run in runs for i, p in enumerate(run) if not i or run[i - 1][0] != p[0]]),
            "p10_harness_ms_per_step": 1000 * p10(harness),
            "p10_ceiling_ms_per_step": 1000 * p10(ceiling),
            "ratio_of_p10": p10(ceiling) / p10(harness),
            "runs": per_run, "min_run": min(per_run), "max_run": max(per_run),
            "pairs": pairs}


def targets(rows: dict, interleaved: dict = None) -> list:
    """The issue's targets, checked against this run.

    Throughput targets are judged on the median of the per-repeat (paired)
    ratios, where both variants ran side by side, which is less sensitive to a
    machine whose speed drifts during the run than the ratio of the medians;
    both are shown. harness-tape vs the ceiling is judged on the interleaved
    measurement when there is one (the two alternate every execution, on the
    same model, which pairs them within about a second): total ceiling time over
    total harness time for the same steps.
    """
    checks = []

    def check(name, value, ok, shown):
        if value is not None:
            checks.append({"target": name, "value": value, "pass": bool(ok), "shown": shown})

    def ratio(row, key):
        """(judged value, shown text): the paired median, else the ratio of medians."""
        paired, plain = (row.get(f"{key}_paired") or {}).get("median"), row.get(key)
        fast = f"; {fmt(row.get(f'{key}_fast'), 3)} fast epochs"
        if paired is None:
            return plain, fmt(plain, 3) + fast
        return paired, f"{fmt(paired, 3)} paired ({fmt(plain, 3)} of medians{fast})"

    for v, goal in (("harness-fit", 1.0), ("harness-train_on_batch", 1.0)):
        r, shown = ratio(rows.get(v, {}), "vs_baseline")
        check(f"{v} >= {goal}x {baseline_of(v)}", r, r is not None and r >= goal, shown)
    r, shown = ratio(rows.get("harness-tape", {}), "vs_ceiling")
    if interleaved:
        shown = (f"{fmt(interleaved['time_weighted'], 3)} interleaved (median per execution "
                 f"{fmt(interleaved['median'], 3)}; {fmt(interleaved['ratio_of_p10'], 3)} of "
                 f"p10 step times; whole runs: {shown})")
        r = interleaved["time_weighted"]
    check("harness-tape >= 0.95x ceiling", r, r is not None and r >= 0.95, shown)
    for mode in MODES:
        row = rows.get(f"harness-{mode}", {})
        c, plain = row.get("logging_cost_paired_pct"), row.get("logging_cost_pct")
        shown = (f"{fmt(c, 1)}% paired ({fmt(plain, 1)}% of medians; "
                 f"{fmt(row.get('logging_cost_fast_pct'), 1)}% fast epochs; in the batch "
                 f"hooks {fmt(row.get('logging_cost_hooks_pct'), 2)}% of training time)")
        if c is None:
            c, shown = plain, f"{fmt(plain, 1)}%"
        check(f"harness-{mode}: default logging costs <= 3%", c, c is not None and c <= 3, shown)
    for v, row in rows.items():
        n = row.get("retraces_after_first_epoch")
        check(f"{v}: no retracing after epoch 1", n, n == 0, str(n))
    for v, row in rows.items():
        if v.startswith("harness-") and row.get("peak_rss_vs_baseline"):
            r = row["peak_rss_vs_baseline"]
            check(f"{v}: peak RSS <= 1.1x {row['baseline']}", r, r <= 1.1, fmt(r, 3))
    for v, row in rows.items():
        g = row.get("rss_growth_ep2_to_last_mb")
        check(f"{v}: RSS does not grow with epochs (ep2 -> last <= 16 MB)", g,
              g is not None and g <= 16, f"{fmt(g, 1)} MB")
    return checks


# --- Report -----------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return a / b if a and b else None


def _get(rows, variant, key="examples_per_second"):
    """A variant's median examples per second (or per CPU second)."""
    value = rows.get(variant, {}).get(key) if variant else None
    return value.get("median") if isinstance(value, dict) else value


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown_main(rows: dict, checks: list) -> str:
    lines = ["| variant | examples/s (median) | spread (min–max) | vs baseline | vs ceiling | "
             "logging cost | examples per CPU-s (vs baseline; vs ceiling) | "
             "GC ms per timed epoch (full collections) | "
             "traces ep1 (train/test) | retraces after ep1 | peak RSS MB "
             "(growth) | peak RSS vs baseline | RSS ep2→last MB |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, row in rows.items():
        eps = row["examples_per_second"]
        spread = (f"{fmt(eps['min'])}–{fmt(eps['max'])}"
                  f" (±{50 * (eps['max'] - eps['min']) / eps['median']:.0f}%)"
                  if eps["median"] else "–")
        vs = f"{fmt(row['vs_baseline'], 3)} × {row['baseline']}" if row["vs_baseline"] else "–"
        if row.get("vs_stream_baseline"):
            paired = (row["vs_stream_baseline_paired"] or {}).get("median")
            vs += (f"; {fmt(row['vs_stream_baseline'], 3)} × {row['stream_baseline']} "
                   f"({fmt(paired, 3)} paired, {fmt(row['vs_stream_baseline_fast'], 3)} fast)")
        cost = f"{row['logging_cost_pct']:+.1f}%" if row["logging_cost_pct"] is not None else "–"
        t = row.get("traces_first_epoch") or {}
        traces = f"{t.get('train', '–')}/{t.get('test', '–')}" if t else "–"
        peak = (f"{fmt(row['peak_rss_mb'])} ({fmt(row['peak_growth_mb'])})"
                if row["peak_rss_mb"] else
                (f"({fmt(row['peak_growth_mb'])})" if row["peak_growth_mb"] else "–"))
        cpu = (f"{fmt(row['examples_per_cpu_second'])} ({fmt(row['cpu_vs_baseline'], 3)}; "
               f"{fmt(row['cpu_vs_ceiling'], 3)})")
        collections = f"{fmt(row['gc_ms_per_epoch'], 1)} ({row['full_collections']})"
        lines.append(f"| {v} | {fmt(eps['median'])} | {spread} | {vs} | "
                     f"{fmt(row['vs_ceiling'], 3)} | {cost} | {cpu} | {collections} | {traces} | "
                     f"{fmt(row['retraces_after_first_epoch'])} | {peak} | "
                     f"{fmt(row.get('peak_rss_vs_baseline'), 3)} | "
                     f"{fmt(row['rss_growth_ep2_to_last_mb'], 1)} |")
    cross = [f"{v} {fmt(own)} ({own / row['examples_per_second']['median']:.3f}×)"
             for v, row in rows.items()
             if (own := row.get("harness_event_examples_per_second"))
             and row["examples_per_second"]["median"]]
    if cross:
        lines += ["", "Cross-check, the harness's own `epoch_examples_per_second` from its "
                  "event files (epochs ≥ 2 pooled the same way; median over repeats), and its "
                  "ratio to the bench's figure above: "
                  + "; ".join(cross) + "."]
    lines += ["", "| target | measured | result |", "|---|---:|---|"]
    lines += [f"| {c['target']} | {c['shown']} | {'pass' if c['pass'] else 'FAIL'} |"
              for c in checks]
    return "\n".join(lines)


def markdown_interleaved(result: dict) -> list:
    if not result:
        return []
    return ["**harness-tape vs the ceiling, interleaved.** harness-tape (default logging) with "
            "the ceiling's compiled step run right after each of its executions, for as many "
            "steps, on one in-memory batch and the same model; each execution is timed from the "
            "end of the previous ceiling call (the loop's Python and hooks count). Over "
            f"{result['executions']} executions after epoch 1 in {len(result['runs'])} runs: "
            f"total ceiling time / total harness time {fmt(result['time_weighted'], 3)}; "
            f"(per run {fmt(result['min_run'], 3)}–{fmt(result['max_run'], 3)}); median of the "
            f"per-execution ratios {fmt(result['median'], 3)}; the longest "
            f"executions alone (mid-epoch) {fmt(result['full_executions'], 3)}; each epoch's "
            f"first execution, right after the epoch-end work, {fmt(result['first_executions'], 3)}"
            "; p10 step time harness "
            f"{fmt(result['p10_harness_ms_per_step'], 3)} ms, ceiling "
            f"{fmt(result['p10_ceiling_ms_per_step'], 3)} ms "
            f"({fmt(result['ratio_of_p10'], 3)}).", ""]


def markdown_scaling(kind: str, rows: list) -> str:
    extra = " data MB |" if kind == "data_scale" else ""
    lines = [f"| {kind} | variant | examples/s | spread | peak RSS MB | growth MB | "
             f"RSS at last epoch MB | RSS ep2→last MB | retraces |{extra}",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if extra else "")]
    for r in rows:
        lines.append(f"| {r[kind]} | {r['variant']} | {fmt(r['examples_per_second'])} | "
                     f"{fmt(r['min'])}–{fmt(r['max'])} | {fmt(r['peak_rss_mb'])} | "
                     f"{fmt(r['peak_growth_mb'])} | {fmt(r['last_epoch_rss_mb'])} | "
                     f"{fmt(r['rss_growth_ep2_to_last_mb'], 1)} | "
                     f"{fmt(r['retraces_after_first_epoch'])} |"
                     + (f" {fmt(r['data_mb'], 1)} |" if extra else ""))
    return "\n".join(lines)


def markdown_knobs(rows: list) -> str:
    """knob x mode: examples/s (paired speed-up vs the mode's defaults, its spread)."""
    knobs = list(dict.fromkeys(r["knob"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    cell = {(r["mode"], r["knob"]): r for r in rows}

    def text(r):
        if r["note"]:
            return r["note"].split(":")[0]
        if r["knob"].startswith("defaults") or r["speedup"] is None:
            return fmt(r["examples_per_second"])
        return (f"{fmt(r['examples_per_second'])} ({fmt(r['speedup'], 2)}×; "
                f"{fmt(r['speedup_min'], 2)}–{fmt(r['speedup_max'], 2)})")

    lines = ["| knob | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for knob in knobs:
        lines.append(f"| {knob} | " + " | ".join(text(cell[(m, knob)]) for m in modes) + " |")
    notes = sorted({r["note"] for r in rows if r["note"] and r["note"].startswith("rejected")})
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def environment() -> dict:
    import keras
    import tensorflow as tf

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--", "harness", "callbacks")),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def _header(args, settings, env, command, loads=()) -> list:
    data = ("synthetic (--quick)" if args.quick else
            f"real Reuters ({args.num_examples or REUTERS_TRAIN} train examples, "
            f"{settings['num_words']} words)")
    return [f"# Benchmark ({env['date']})", "", f"`{command}`", "",
            f"TF {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}, "
            f"{env['cpus']} CPUs; repo {env['git_commit']}"
            f"{' + uncommitted harness/callbacks changes' if env['git_dirty'] else ''}.", "",
            f"Data: {data}; batch {settings['batch_size']}, max_len {settings['max_len']}, "
            f"{settings['epochs']} epochs (the first excluded), {args.repeats} repeats "
            "interleaved in one process; examples/s = training examples / training seconds "
            "(epoch begin to the start of validation)."
            + (f" Harness options: {settings['extra']}." if settings["extra"] else "")
            + (f" Load average (1 min) at the timed runs: median {median(loads):.1f}, "
               f"max {max(loads):.1f} on {env['cpus']} CPUs (other processes share them)."
               if loads else ""), ""]


NOTES = [
    "- bare-*: the model written out with Keras layers (Nadam 1e-3, sparse CE, accuracy and "
    "top-5 accuracy: the harness's default metrics, so every variant does the same work), "
    "tf.data cache→shuffle→batch→prefetch; bare-tape calls a `@tf.function` step from "
    "`for x, y in ds`; ceiling runs that step in a `tf.range` loop on one in-memory batch "
    "(one call per epoch, no input pipeline, no Python per step).",
    "- bare-fit-stream: bare fit on one endless `.repeat()` stream with `steps_per_epoch` "
    "(like the harness's own input stream): no epoch waits for a new iterator to refill its "
    "8,982-example shuffle buffer, as the tutorial's bare-fit does at every epoch start.",
    "- bare-tape-ingraph: bare-tape's step in a `tf.range` loop inside one compiled call "
    "per epoch that pulls its batches from one endless stream's iterator (the best tape loop "
    "../shared/DESIGN.md measured, ~0.9 of the ceiling there); the harness's tape loop works "
    "the same way.",
    "- harness-*: `harness.train.train(Config(...))` with default logging (batch scalars "
    "every 100 steps, histograms every epoch) or `-nolog` (summary_every_steps=0, "
    "histogram_freq=0). Checkpoints and best.keras are still written at every epoch end "
    "(outside the timed part).",
    "- vs baseline: harness fit vs bare-fit, train_on_batch vs bare-train_on_batch, tape vs "
    "bare-tape (and vs ceiling in its own column); ratio of medians. logging cost = 1 − "
    "(logging on / logging off). The targets below are judged on the median of the "
    "per-repeat ratios (the two variants ran side by side in each repeat), which a machine "
    "whose speed drifts affects less; both figures are shown there and saved in bench.json.",
    f"- fast epochs: the {FAST_PERCENTILE}th percentile of single epochs' examples/s over all "
    "repeats. This machine flips between a fast and a slow state every few seconds (the same "
    "steps take ~2.4 or ~3.2 ms), so the noise only ever slows a variant down; its fastest "
    "epochs show what its work costs. Shown beside the judged figure in the targets.",
    "- in the batch hooks: the time the loop spent in its callbacks' train-batch hooks "
    "(`CallbackList.on_train_batch_begin/end`) as a share of training time, logging on minus "
    "logging off. All the work default logging adds while training (batch scalars every 100 "
    "steps; histograms and epoch scalars come after validation) runs there, so this is its "
    "direct cost; it barely moves with the machine's speed, unlike the throughput ratios.",
    "- examples per CPU-s: training examples / CPU seconds of the whole process (all threads) "
    "in the timed part: what the work costs rather than how fast it ran (a loop that keeps "
    "more threads busy for the same speed shows here). On this machine it falls with the "
    "wall-clock figure in slow spells, so it does not filter that noise out.",
    "- traces: baselines count traces of Keras's train/test step (its Python body runs only "
    "while tracing) or `experimental_get_tracing_count()` of their tf.functions; the harness "
    "its own counter (harness.tracing), snapshot at each epoch end.",
]


def write_report(out, args, settings, result, command) -> None:
    env = environment()
    loads = [max(r.get("load_average") or [0]) for runs in result.get("main", {}).get(
        "runs", {}).values() for r in runs]
    md = _header(args, settings, env, command, loads)
    if "main" in result:
        md += ["## Throughput, traces and memory", "", markdown_main(result["main"]["rows"],
                                                                     result["targets"]), ""]
        md += markdown_interleaved(result["main"].get("interleaved_tape"))
        md += [MEMORY_NOTE if args.memory == "subprocess" else INPROCESS_NOTE
               if args.memory == "inprocess" else "Memory not measured (--memory=off).", ""]
        md += NOTES + [""]
    for kind, rows in result.get("scaling", {}).get("tables", {}).items():
        title = ("Batch-size scaling" if kind == "batch_size" else
                 "Data-size scaling (synthetic, K × Reuters's 8,982 train examples)")
        md += [f"## {title}", "", "Each row: fresh subprocesses (one per repeat); peak RSS "
               "= VmHWM; growth = peak − RSS after importing TF/Keras.", "",
               markdown_scaling(kind, rows), ""]
    if "knobs" in result:
        md += ["## Knobs", "", "The harness with default logging in each mode: examples/s "
               "(median over repeats) and, in brackets, the speed-up against that mode's "
               "defaults (median of the per-repeat ratios; their spread). "
               "'steps_per_execution=epoch': one compiled call per epoch. 'the default': the "
               "knob's value is what the mode already does; 'rejected': the harness refuses "
               "it for that mode (the message is below). The thread knobs run in fresh "
               "subprocesses, since TensorFlow fixes its thread pools when it starts, and "
               "are paired with 'defaults, own process', the defaults run the same way.", "",
               markdown_knobs(result["knobs"]["rows"]), ""]
    sources = result.get("harness_sources", {})
    if sources.get("start") != sources.get("end"):
        md += ["**Warning:** harness/ or callbacks/ changed during this benchmark "
               f"({sources.get('start')} -> {sources.get('end')}): in-process runs used the "
               "code imported first, subprocesses the code of their start.", ""]
    errors = [e for part in ("main", "scaling", "knobs")
              for e in result.get(part, {}).get("errors", [])]
    if errors:
        md += ["## Failures", ""] + [f"- {e['error']}" for e in errors] + [""]
    result.update(command=command, settings=settings, environment=env,
                  memory_method=args.memory)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md[6:]))
    print(f"bench: wrote {os.path.join(out, 'bench.json')} and {os.path.join(out, 'bench.md')}")
