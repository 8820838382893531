"""Where each trial of a sweep stands, read from its run directory, and the ranked
table (and results.json) the sweep ends with. Importing this module does not
import TensorFlow."""

import dataclasses
import math
import os

from harness import report, rundir
from harness.config import Config

NEW, INTERRUPTED, FINISHED, STOPPED_EARLY, FAILED = (
    "new",
    "interrupted",
    "finished",
    "stopped early",
    "failed",
)
DONE = (FINISHED, STOPPED_EARLY)


@dataclasses.dataclass
class Trial:
    """One run of the sweep: its name, swept values, validated config and outcome."""

    name: str
    values: dict
    config: Config
    argv: list = dataclasses.field(default_factory=list)  # its harness.run flags
    status: str = NEW
    seconds: float = 0.0
    error: str = ""

    @property
    def run_dir(self) -> str:
        return os.path.join(self.config.logdir, self.name)

    def history(self) -> dict:
        return rundir.read_history(self.run_dir, context=f"trial {self.name}")

    def best(self) -> tuple:
        """(best --monitor value, its epoch), or (None, None) before the first epoch."""
        history = self.history()
        values = history.get(self.config.monitor, [])
        finite = [i for i, value in enumerate(values) if math.isfinite(value)]
        if not finite:
            return None, None
        sign = -1 if report.higher_is_better(self.config.monitor) else 1
        best = min(finite, key=lambda i: sign * values[i])
        return values[best], history["epoch"][best]


def state(trial: Trial) -> str:
    """NEW (no run yet), INTERRUPTED (resumable), FINISHED or STOPPED_EARLY, from disk."""
    config = trial.config
    if not os.path.isfile(os.path.join(trial.run_dir, rundir.FLAGS_FILE)):
        return NEW
    history = trial.history()
    if len(history["epoch"]) >= config.epochs:
        return FINISHED
    if config.early_stopping_patience:
        from harness.callbacks.early_stopping import patience_state  # imports Keras: only here

        _, wait = patience_state(
            history.get(config.monitor, []),
            report.higher_is_better(config.monitor),
            config.early_stopping_min_delta,
        )
        if wait >= config.early_stopping_patience:
            return STOPPED_EARLY
    return INTERRUPTED


def ranked(trials: list) -> list:
    """The trials best first by --monitor; those without a value last, in order."""
    scored = [trial for trial in trials if trial.best()[0] is not None]
    sign = -1 if scored and report.higher_is_better(scored[0].config.monitor) else 1
    scored.sort(key=lambda trial: sign * trial.best()[0])
    return scored + [trial for trial in trials if trial not in scored]


def results(trials: list) -> list:
    """The machine-readable rows of results.json, best first."""
    rows = []
    for rank, trial in enumerate(ranked(trials), 1):
        value, epoch = trial.best()
        rows.append(
            {
                "rank": rank,
                "trial": trial.name,
                "run_dir": trial.run_dir,
                "values": trial.values,
                "monitor": trial.config.monitor,
                "best": value,
                "best_epoch": epoch,
                "epochs": len(trial.history()["epoch"]),
                "status": trial.status,
                "seconds": round(trial.seconds, 1),
                **({"error": trial.error} if trial.error else {}),
            }
        )
    return rows


def table(rows: list, swept: list) -> str:
    """The console table of `results` rows, one column per swept flag."""
    monitor = rows[0]["monitor"]
    header = ("rank", "trial", *swept, monitor, "epoch", "epochs", "status", "seconds")
    lines = [header]
    for row in rows:
        best = "-" if row["best"] is None else f"{row['best']:.4f}"
        lines.append(
            (
                str(row["rank"]),
                row["trial"],
                *(row["values"][name] for name in swept),
                best,
                str(row["best_epoch"] or "-"),
                str(row["epochs"]),
                row["status"],
                f"{row['seconds']:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )
