"""The training loops, by mode: the registry, and the flag rules their declarations make.

`LOOPS` maps each --mode to its `Loop` class (see `base.Loop`); a new loop is a
module with its class and one entry here. Importing this package does not
import TensorFlow, so the flags are checked against the loops before it loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import UsageError
from harness.loops.base import Loop, Schedule, build_metrics, metric_names
from harness.loops.fit import FitLoop
from harness.loops.tape import TapeLoop
from harness.loops.train_on_batch import TrainOnBatchLoop

if TYPE_CHECKING:
    from harness.config import Config

__all__ = [
    "LOOPS",
    "MODES",
    "Loop",
    "Schedule",
    "build_metrics",
    "check",
    "get",
    "metric_names",
    "run",
]

LOOPS: dict[str, type[Loop]] = {loop.mode: loop for loop in (FitLoop, TrainOnBatchLoop, TapeLoop)}
MODES = tuple(LOOPS)
# Keras 3's fit and train_on_batch under MultiWorkerMirroredStrategy fail ("Attempt to
# convert a value (PerReplica...) to a Tensor"; "Invalid reduction dimension 0").
KERAS_MULTI_WORKER_ISSUE = "keras-team/keras#20585 (tensorflow/tensorflow#72388)"


def get(mode: str) -> Loop:
    """The loop `mode` names."""
    if mode not in LOOPS:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return LOOPS[mode]()


def run(mode: str, *args, **kwargs) -> None:
    """Trains with the loop `mode` names: `get(mode).run(*args, **kwargs)` (see `Loop.run`)."""
    get(mode).run(*args, **kwargs)


def check(config: Config) -> None:
    """Raises UsageError for an option the loop of --mode does not accept."""
    loop = LOOPS[config.mode]
    if config.strategy == "multi_worker" and not loop.multi_worker:
        raise UsageError(
            f"--strategy=multi_worker cannot run --mode={loop.mode}: Keras 3's "
            f"{loop.mode} fails under MultiWorkerMirroredStrategy "
            f"({KERAS_MULTI_WORKER_ISSUE}); use {_modes_where('multi_worker')}, the "
            "harness's own loop, which runs on many machines"
        )
    if config.steps_per_execution > 1 and loop.one_batch_per_call:
        raise UsageError(
            f"--steps_per_execution={config.steps_per_execution} does not apply "
            f"to --mode={loop.mode}, which trains one batch per call: use "
            f"{_modes_where('one_batch_per_call', False)}, or drop the flag"
        )


def _modes_where(declaration: str, value: bool = True) -> str:
    """'--mode=a or --mode=b': the loops whose `declaration` is `value`."""
    return " or ".join(
        f"--mode={mode}" for mode, loop in LOOPS.items() if getattr(loop, declaration) == value
    )
