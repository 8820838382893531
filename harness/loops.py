"""The three training loops: `fit`, `train_on_batch` and `tape`.

One contract (after Orbit's runners): each loop takes the same compiled model,
the same data and the same `keras.callbacks.CallbackList`, calls the same hooks
with the same `logs` keys, and leaves the per-epoch history on the model's
`History` callback. `fit` is Keras's own; the other two share `_manual_loop`
and differ only in how one batch is trained and evaluated.
"""

import contextlib
import dataclasses
from typing import Iterator, Optional

import keras
import numpy as np
import tensorflow as tf

from callbacks.epoch_state import EpochMetricsState, VariablesState
from callbacks.profiler import ProfilerCallback
from harness.config import MODES
from harness.data import TrainStream

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
    def at_step(cls, global_step: int, epochs: int, steps_per_epoch: int,
                steps_per_execution: int = 1) -> "Schedule":
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


def run(mode: str, model: keras.Model, train: TrainStream,
        validation: Optional[tf.data.Dataset], callbacks: keras.callbacks.CallbackList,
        schedule: Schedule, *, jit_compile: bool = False,
        metrics_state: Optional[EpochMetricsState] = None) -> None:
    """Trains `model` with the loop named by `mode`.

    Args:
        mode: one of MODES.
        model: a compiled model.
        train: the endless stream of (x, y) training batches.
        validation: finite (x, y) batches, evaluated in full after every epoch.
        callbacks: the run's callbacks, with a History and (optionally) a progress bar.
        schedule: epochs and steps.
        jit_compile: compile the tape loop's step with XLA (`fit` and
            `train_on_batch` take it from `model.compile`).
        metrics_state: gets the loop's running train metrics attached, to carry
            them across a resume in mid-epoch.
    """
    metrics_state = metrics_state or EpochMetricsState()
    if mode == "fit":
        metrics_state.attach(VariablesState(lambda: model.metrics_variables))
        _fit(model, train, validation, callbacks, schedule)
    elif mode == "train_on_batch":
        steps = _OnBatchSteps(model)
        metrics_state.attach(steps)
        with _compiled_metric_resets(model):
            _manual_loop(model, steps, train, validation, callbacks, schedule)
    elif mode == "tape":
        steps = _TapeSteps(model, jit_compile)
        metrics_state.attach(VariablesState(
            lambda: [*model.metrics_variables, *steps.loss_mean.variables]))
        _manual_loop(model, steps, train, validation, callbacks, schedule)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def build_metrics(model: keras.Model, probe: tuple) -> None:
    """Creates the model's compiled metrics now (Keras would at the first train
    step), so that a restored running state can be written into them."""
    x, y = probe
    model.compute_metrics(x, y, model(x, training=False))
    model.reset_metrics()


def _fit(model, train, validation, callbacks, schedule: Schedule) -> None:
    """`model.fit`; a run resumed mid-epoch first finishes that epoch in its own call."""
    epoch = schedule.initial_epoch
    if schedule.initial_step_in_epoch:
        model.fit(train.batches(schedule.start_step), epochs=epoch + 1,
                  initial_epoch=epoch, validation_data=validation, callbacks=callbacks,
                  steps_per_epoch=schedule.steps_per_epoch - schedule.initial_step_in_epoch,
                  verbose=0, shuffle=False)
        if model.stop_training:
            return
        epoch += 1
    if epoch < schedule.epochs:
        model.fit(train.batches(epoch * schedule.steps_per_epoch), epochs=schedule.epochs,
                  initial_epoch=epoch, steps_per_epoch=schedule.steps_per_epoch,
                  validation_data=validation, callbacks=callbacks, verbose=0, shuffle=False)


def _manual_loop(model, steps, train, validation, callbacks, schedule: Schedule) -> None:
    """The epoch/step skeleton `fit` runs, driven by hand (Keras's documented way).

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
            epoch_logs.update(_evaluate(steps, validation, callbacks,
                                        1 if capturing else per_execution))
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(epoch_logs)


def _profile_windows(callbacks: keras.callbacks.CallbackList) -> list:
    """The (start, stop) global-step windows the run's profiler callbacks capture."""
    return sorted(window for callback in callbacks.callbacks
                  if isinstance(callback, ProfilerCallback) for window in callback.windows)


def _execution_size(global_step: int, per_execution: int, epoch_end: int,
                    windows: list) -> int:
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


@contextlib.contextmanager
def _compiled_metric_resets(model: keras.Model):
    """Lets `train_on_batch` / `test_on_batch` reset the metrics in one compiled call.

    Keras 3 resets every metric at the start of each `*_on_batch` call, one
    eager assign per metric variable: ~210 µs of a ~2.4 ms Reuters step here.
    A `tf.function` doing the same assigns takes ~50 µs. The first reset stays
    eager: without a strategy Keras builds the compiled metrics when the train
    function first traces, right after that reset. The model gets its own
    method back when the loop ends.
    """
    eager_reset = model.reset_metrics
    compiled_reset = tf.function(eager_reset)

    def first_reset():
        eager_reset()
        model.reset_metrics = compiled_reset  # every metric exists from the next call on

    model.reset_metrics = first_reset
    try:
        yield
    finally:
        del model.reset_metrics  # the class's method again


class _OnBatchSteps:
    """Steps through `model.train_on_batch` / `test_on_batch`.

    Keras 3 resets the metrics inside every `*_on_batch` call, so each call
    returns that batch's values; the epoch's figures are their average weighted
    by batch size (exact for loss and accuracies, the batch mean for AUC).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.reset()

    def distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """The dataset as is: under a strategy, Keras 3 hands each whole batch to
        every replica (correct averages, but no speed-up, and sparse embedding
        updates with Adam-like optimizers differ slightly from one device)."""
        return dataset

    def read(self, stream: TrainStream, start_step: int, end_step: int) -> Iterator:
        """The training batches from global step `start_step` on: the stream itself.
        (Keras traces its step again at the first partial batch, after the first
        epoch if --steps_per_epoch is shorter than a pass; it cannot be traced ahead.)"""
        del end_step
        return iter(self.distribute(stream.batches(start_step)))

    def reset(self) -> None:
        self._sums: dict = {}
        self._count = 0
        self._restored: Optional[np.ndarray] = None

    def get_state(self) -> np.ndarray:
        """The running state as [examples, sum of each log by name]: a `MetricState`."""
        return np.array([self._count, *(self._sums[name] for name in sorted(self._sums))],
                        dtype=np.float64)

    def set_state(self, values: np.ndarray) -> None:
        """Continues from `values` (see `get_state`); the names come with the next batch."""
        self._restored = values

    def train(self, batches: Iterator, count: int) -> Logs:
        del count  # always 1: train_on_batch trains one batch per call
        x, y = next(batches)
        return self._add(_eager_batch_size(x), self.model.train_on_batch(x, y, return_dict=True))

    def test(self, iterator, count: int) -> Logs:
        del count  # always 1, as in train
        x, y = next(iterator)
        return self._add(_eager_batch_size(x), self.model.test_on_batch(x, y, return_dict=True))

    def _add(self, size: int, logs: Logs) -> Logs:
        """Adds one batch's values; returns the running averages, as `fit` logs them."""
        if self._restored is not None:
            self._count = self._restored[0]
            self._sums = dict(zip(sorted(logs), self._restored[1:]))
            self._restored = None
        self._count += size
        for name, value in logs.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * size
        return self.result()

    def result(self) -> Logs:
        return {name: total / self._count for name, total in self._sums.items()}


class _TapeSteps:
    """A `tf.GradientTape` train step compiled with `tf.function`, on any strategy.

    One compiled call pulls `count` batches from an iterator and trains on each
    in a `tf.range` loop, so Python runs once per execution, not once per step
    (Keras's own train function works the same way); validation runs in
    executions the same way (on Reuters a third less time than a call per batch,
    which shortens the pause between epochs); the training iterators come from
    `_StaticBatches`, so every call sees a static batch size. Each step runs on
    every replica through `strategy.run` (a plain call on the default strategy). The
    loss is the model's compiled loss (`model.compute_loss`), so losses, loss
    weights and regularizers count exactly as in `fit`: Keras divides it by the
    number of replicas, and the optimizer sums the replicas' gradients, which
    averages over the global batch. The metrics are the model's compiled ones
    (`model.compute_metrics`; per-output losses are tracked by `compute_loss`),
    so the logs have exactly `fit`'s keys, multi-output models included; they
    live in the strategy's scope and are reduced across replicas when read.
    With `jit_compile` the per-replica step is compiled by XLA. An execution of
    one step is a call without a loop: xprof finds no step marker in a capture
    in which a `tf.while_loop` ran, so profiled steps run this way.
    """

    def __init__(self, model: keras.Model, jit_compile: bool = False):
        self.model = model
        self.strategy = tf.distribute.get_strategy()
        self.loss_mean = keras.metrics.Mean(name="loss")
        self._step = tf.function(self._train_step, jit_compile=jit_compile)
        self._steps = tf.function(self._train_steps)
        self._one_step = tf.function(self._train_one)
        self._test_step = tf.function(self._test_on_replica, jit_compile=jit_compile)
        self._test = tf.function(self._test_steps)
        self._test_one = tf.function(self._test_one_batch)
        self._trace_partial = False

    def distribute(self, dataset: tf.data.Dataset):
        """The dataset split across the strategy's replicas (per global batch)."""
        return self.strategy.experimental_distribute_dataset(dataset)

    def read(self, stream: TrainStream, start_step: int, end_step: int) -> "_StaticBatches":
        """The training batches from global step `start_step` on; training ends at `end_step`."""
        partial = stream.next_partial_step(start_step)
        self._trace_partial = partial is not None and partial < end_step
        return _StaticBatches(stream, start_step, self.distribute)

    def train(self, batches: "_StaticBatches", count: int) -> Logs:
        for iterator, steps in batches.take(count):
            logs = (self._one_step(iterator) if steps == 1
                    else self._steps(iterator, tf.constant(steps)))
        if self._trace_partial:
            # The partial batches' step is traced with the first execution, not at the
            # first partial batch: that comes after the first epoch when
            # --steps_per_epoch is shorter than a pass, and the step must not retrace then.
            self._one_step.get_concrete_function(batches.partial)
            self._trace_partial = False
        return logs

    def test(self, iterator, count: int) -> Logs:
        if count == 1:
            return self._test_one(iterator)
        return self._test(iterator, tf.constant(count))

    def reset(self) -> None:
        self.loss_mean.reset_state()
        self.model.reset_metrics()

    def _train_steps(self, iterator, count) -> Logs:
        for _ in tf.range(count):
            self.strategy.run(self._step, args=next(iterator))
        return self._logs()

    def _train_one(self, iterator) -> Logs:
        self.strategy.run(self._step, args=next(iterator))
        return self._logs()

    def _train_step(self, x, y) -> None:
        model = self.model
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled_loss = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        self._update(x, y, y_pred, loss)

    def _test_steps(self, iterator, count) -> Logs:
        for _ in tf.range(count):
            self.strategy.run(self._test_step, args=next(iterator))
        return self._logs()

    def _test_one_batch(self, iterator) -> Logs:
        self.strategy.run(self._test_step, args=next(iterator))
        return self._logs()

    def _test_on_replica(self, x, y) -> None:
        y_pred = self.model(x, training=False)
        loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        self._update(x, y, y_pred, loss)

    def _update(self, x, y, y_pred, loss) -> None:
        # Undo Keras's division by the number of replicas: this is a mean per example.
        loss = loss * tf.cast(self.strategy.num_replicas_in_sync, loss.dtype)
        self.loss_mean.update_state(loss, sample_weight=_batch_size(x))
        self.model.compute_metrics(x, y, y_pred)

    def _logs(self) -> Logs:
        return {**self.model.get_metrics_result(), "loss": self.loss_mean.result()}

    def result(self) -> Logs:
        return {name: float(value) for name, value in self._logs().items()}


class _StaticBatches:
    """The stream's batches for the tape loop, from two iterators: its full batches
    from one and each pass's partial batch from the other.

    Each iterator's batches have a static size, and so do the compiled steps
    traced on them (one trace each). With the size unknown, as in one iterator
    over both, grappler did not fuse the convolutions with their bias adds for
    oneDNN here: a separate BiasAdd cost ~5% of a Reuters step, and reading the
    full batches alone brought the loop from 0.92 to 0.95-0.98 of the one-batch
    ceiling (100-step calls paired in one process).
    """

    def __init__(self, stream: TrainStream, start_step: int, distribute) -> None:
        self._stream = stream
        self._step = start_step
        self._full = iter(distribute(stream.full_batches(start_step)))
        self.partial = (iter(distribute(stream.partial_batches(start_step)))
                        if stream.partial_size else None)

    def take(self, count: int) -> list:
        """The next `count` steps, in order, as (iterator, steps) runs."""
        runs = []
        end = self._step + count
        while self._step < end:
            partial = self._stream.next_partial_step(self._step)
            if partial == self._step:
                runs.append((self.partial, 1))
            else:
                runs.append((self._full, min(end, partial or end) - self._step))
            self._step += runs[-1][1]
        return runs


def _batch_size(x):
    """The number of examples in a batch of single or multiple inputs, in a graph."""
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _eager_batch_size(x) -> int:
    """The number of examples in an eager batch, from its static shape (no op, no sync)."""
    return len(tf.nest.flatten(x)[0])


