"""What a run prints on the console at its start and at its end."""

import math
import shlex
import sys


def startup(config, run_dir: str, splits, task, steps_per_epoch: int, schedule) -> str:
    """The lines that say what is about to run and where it goes."""
    lines = [
        f"harness: mode={config.mode} model={config.model} dataset={config.dataset} "
        f"({splits.train_size} train / {splits.val_size} validation, {task.describe()})",
        f"harness: {config.epochs} epochs x {steps_per_epoch} steps of batch "
        f"{config.batch_size}, optimizer={config.optimizer} lr={config.learning_rate:g}",
        f"harness: run directory {run_dir}",
    ]
    if schedule.initial_epoch or schedule.initial_step_in_epoch:
        lines.append(
            f"harness: resuming at epoch {schedule.initial_epoch + 1}, "
            f"step {schedule.initial_step_in_epoch + 1} of the epoch"
        )
    return "\n".join(lines)


def summary(history: dict, run_dir: str, logdir: str) -> str:
    """A table of final and best metrics, the run directory and how to see it."""
    names = [name for name in history if name != "epoch"]
    if not names or not history["epoch"]:
        return f"harness: no epoch finished; run directory {run_dir}"
    rows = [("metric", "final", "best", "best epoch")]
    for name in names:
        values = history[name]
        best = _best_index(name, values)
        rows.append((name, _fmt(values[-1]), _fmt(values[best]), str(history["epoch"][best])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(
        [
            "",
            *table,
            "",
            f"Run directory: {run_dir}",
            f"See it in TensorBoard: {tensorboard_command(logdir)}",
        ]
    )


def tensorboard_command(logdir: str) -> str:
    """A shell command that serves `logdir` with the TensorBoard of this interpreter
    (a `tensorboard` on PATH may be missing or another install's)."""
    return shlex.join(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1"]
    )


LOWER_IS_BETTER = ("loss", "crossentropy", "mae", "mse", "rmse", "seconds")


def higher_is_better(metric: str) -> bool:
    """Lower is better for losses, errors and timings, higher for everything else."""
    return not metric.endswith(LOWER_IS_BETTER)


def _best_index(name: str, values: list) -> int:
    key = (lambda i: -values[i]) if higher_is_better(name) else (lambda i: values[i])
    finite = [i for i in range(len(values)) if math.isfinite(values[i])] or [0]
    return min(finite, key=key)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
