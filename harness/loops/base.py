"""The loop contract and what the loops share: `Loop`, `Schedule`, the manual skeleton.

One contract (after Orbit's `AbstractTrainer`): each loop takes the same compiled
model, the same data and the same `keras.callbacks.CallbackList`, calls the same
hooks with the same `logs` keys, and leaves the per-epoch history on the model's
`History` callback. A loop also declares the options it accepts, so the flags
are checked against it (`harness.loops.check`) before TensorFlow loads: this
module and the loop modules import TensorFlow only when a loop runs.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, ClassVar

from harness.errors import UsageError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from harness.callbacks.epoch_state import EpochMetricsState
    from harness.config import Config
    from harness.pipeline import TrainStream

Logs = dict


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long to train: epochs are 0-based indices in [initial_epoch, epochs)."""

    epochs: int
    steps_per_epoch: int
    initial_epoch: int = 0
    initial_step_in_epoch: int = 0
    steps_per_execution: int = 1

    @classmethod
    def at_step(
        cls, global_step: int, epochs: int, steps_per_epoch: int, steps_per_execution: int = 1
    ) -> Schedule:
        """The schedule of a run that has already trained `global_step` steps."""
        epoch, step = divmod(global_step, steps_per_epoch)
        return cls(epochs, steps_per_epoch, epoch, step, steps_per_execution)

    @property
    def start_step(self) -> int:
        """The global step training starts from."""
        return self.initial_epoch * self.steps_per_epoch + self.initial_step_in_epoch

    @property
    def end_step(self) -> int:
        """The global step training ends at."""
        return self.epochs * self.steps_per_epoch


class Loop(abc.ABC):
    """A training loop: the options it accepts, and `run`.

    The class attributes are the loop's declaration; `harness.loops.check`
    turns them into the flags' rules, so no other module branches on a mode.
    """

    mode: ClassVar[str]
    """The --mode that picks this loop (its key in `harness.loops.LOOPS`)."""
    auto_steps_per_execution: ClassVar[int] = 1
    """What --steps_per_execution=0 (auto) means: up to this many steps per
    compiled call, cut to land on the step summaries and step checkpoints."""
    one_batch_per_call: ClassVar[bool] = False
    """Whether it trains one batch per call, and so refuses --steps_per_execution > 1."""
    steps_per_execution_divides_epoch: ClassVar[bool] = False
    """Whether --steps_per_execution must divide the steps of an epoch."""
    multi_worker: ClassVar[bool] = False
    """Whether it runs under --strategy=multi_worker."""

    def execution_steps(self, config: Config) -> int:
        """Train steps per compiled call: --steps_per_execution, or this loop's auto."""
        if config.steps_per_execution:
            return config.steps_per_execution
        return math.gcd(
            self.auto_steps_per_execution, config.summary_every_steps, config.checkpoint_every_steps
        )

    def check_epoch(self, steps_per_epoch: int, execution_steps: int) -> None:
        """Raises UsageError if the executions do not fit the epoch this loop runs."""
        if self.steps_per_execution_divides_epoch and steps_per_epoch % execution_steps:
            raise UsageError(
                f"--steps_per_execution={execution_steps} must divide the "
                f"{steps_per_epoch} steps of an epoch with --mode={self.mode} "
                "(Keras would run extra steps); set --steps_per_epoch to a "
                "multiple of it"
            )

    @abc.abstractmethod
    def run(
        self,
        model: keras.Model,
        train: TrainStream,
        validation: tf.data.Dataset | None,
        callbacks: keras.callbacks.CallbackList,
        schedule: Schedule,
        *,
        jit_compile: bool = False,
        metrics_state: EpochMetricsState | None = None,
    ) -> None:
        """Trains `model`.

        Args:
            model: a compiled model.
            train: the endless stream of (x, y) training batches.
            validation: finite (x, y) batches, evaluated in full after every epoch.
            callbacks: the run's callbacks, with a History and (optionally) a progress bar.
            schedule: epochs and steps.
            jit_compile: compile a hand-written step with XLA (`fit` and
                `train_on_batch` take it from `model.compile`).
            metrics_state: gets the loop's running train metrics attached, to carry
                them across a resume in mid-epoch.
        """


def build_metrics(model: keras.Model, probe: tuple) -> None:
    """Creates the model's compiled metrics now (Keras would at the first train
    step), so that a restored running state can be written into them."""
    x, y = probe
    model.compute_metrics(x, y, model(x, training=False))
    model.reset_metrics()


def metric_names(model: keras.Model, probe: tuple) -> list:
    """The keys the compiled `model` logs ('loss' and its metrics' names)."""
    build_metrics(model, probe)
    return list(model.get_metrics_result())


def manual_loop(model, steps, train, validation, callbacks, schedule: Schedule) -> None:
    """The epoch/step skeleton `fit` runs, driven by hand (Keras's documented way);
    `steps` trains and evaluates (see the manual loops' steps modules).

    Batches go in executions of up to `schedule.steps_per_execution` steps that
    end at multiples of it in global steps (so periodic actions at such
    multiples happen exactly there) and at epoch ends; the batch hooks see an
    execution's first and last batch index, as under `fit`. The steps a
    `ProfilerCallback` captures run one per execution, and so do the validation
    batches evaluated while a capture is open: xprof finds no step marker in a
    capture in which a compiled loop over steps ran. In a run that profiles, the
    first step runs alone too, so the one-step call's first run (graph
    optimization, ~0.1 s) is not in a window.
    """
    batches = steps.read(train, schedule.start_step, schedule.end_step)
    windows = _profile_windows(callbacks)
    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs: Logs = {}
    global_step = schedule.start_step
    per_execution = schedule.steps_per_execution
    for epoch in range(schedule.initial_epoch, schedule.epochs):
        steps.reset()
        callbacks.on_epoch_begin(epoch)
        epoch_end = (epoch + 1) * schedule.steps_per_epoch
        batch = 0
        while global_step < epoch_end and not model.stop_training:
            count = _execution_size(global_step, per_execution, epoch_end, windows)
            if windows and global_step == schedule.start_step:
                count = 1  # the one-step call's first run stays out of the windows
            callbacks.on_train_batch_begin(batch)
            logs = steps.train(batches, count)
            callbacks.on_train_batch_end(batch + count - 1, logs)
            global_step += count
            batch += count
        epoch_logs = steps.result()
        if validation is not None:
            capturing = any(start <= global_step < stop for start, stop in windows)
            epoch_logs.update(
                _evaluate(steps, validation, callbacks, 1 if capturing else per_execution)
            )
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(epoch_logs)


def _profile_windows(callbacks: keras.callbacks.CallbackList) -> list:
    """The (start, stop) global-step windows the run's profiler callbacks capture."""
    from harness.callbacks.profiler import ProfilerCallback  # TensorFlow: only when a loop runs

    return sorted(
        window
        for callback in callbacks.callbacks
        if isinstance(callback, ProfilerCallback)
        for window in callback.windows
    )


def _execution_size(global_step: int, per_execution: int, epoch_end: int, windows: list) -> int:
    """How many steps the execution after `global_step` runs: up to the next
    multiple of `per_execution` and the epoch end, one step inside a profile
    window, and never into one."""
    count = min(per_execution - global_step % per_execution, epoch_end - global_step)
    for start, stop in windows:
        if start <= global_step + 1 <= stop:
            return 1
        if global_step + 1 < start <= global_step + count:
            count = start - 1 - global_step
    return count


def _evaluate(steps, validation, callbacks, per_execution: int) -> Logs:
    """One pass over the (finite) validation batches, as `fit`'s `evaluate` does:
    in executions of up to `per_execution` batches, whose first and last batch
    index the test batch hooks see."""
    steps.reset()
    callbacks.on_test_begin()
    iterator = iter(steps.distribute(validation))
    total = int(validation.cardinality())
    for batch in range(0, total, per_execution):
        count = min(per_execution, total - batch)
        callbacks.on_test_batch_begin(batch)
        logs = steps.test(iterator, count)
        callbacks.on_test_batch_end(batch + count - 1, logs)
    logs = steps.result()
    callbacks.on_test_end(logs)
    return {f"val_{name}": value for name, value in logs.items()}
