"""The variants `scripts/bench.py` measures, each trained once and timed the same way.

`bare` trains the baselines and the ceiling in plain Keras on the harness's own data
and model, `run_harness` the harness (`InterleavedCeiling` runs the ceiling between
its executions). `Recorder` times each: training examples / seconds (epoch begin to
the start of validation, as the harness's `epoch_examples_per_second` counts them)
after the first epoch, the share in the train-batch hooks, retraces after the first
epoch, and RSS growth from epoch 2 to the last.
"""

import collections
import math
import os
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from harness import Config, data, models, pipeline, task, tracing, train

SEED = Config.seed


def memory_mb() -> dict:
    """Resident memory now (`rss`) and its high-water mark (`hwm`), in MB, from
    /proc/self/status (not ru_maxrss, which a child inherits across fork+exec)."""
    with open("/proc/self/status") as status:
        return {
            line[2:5].lower(): int(line.split()[1]) / 1024
            for line in status
            if line.startswith(("VmRSS:", "VmHWM:"))
        }


class HookClock:
    """Seconds spent in `CallbackList`'s train-batch hooks, process-wide: what the
    batch-level callbacks cost, which the machine's drifting speed barely touches."""

    def __init__(self) -> None:
        self.seconds = 0.0
        for name in ("on_train_batch_begin", "on_train_batch_end"):
            hook = getattr(keras.callbacks.CallbackList, name)
            setattr(keras.callbacks.CallbackList, name, self._timed(hook))

    def _timed(self, hook: Callable) -> Callable:
        def timed(callbacks, batch, logs=None):
            start = time.perf_counter()
            hook(callbacks, batch, logs)
            self.seconds += time.perf_counter() - start

        return timed


HOOKS = HookClock()


class Recorder(keras.callbacks.Callback):
    """Times each epoch's training part and notes the traces and RSS at its end; a
    callback for `fit` and the harness, called by hand in the bare loops. Also the
    epoch-end pause: from the end of training (validation's start) to the next
    epoch's begin or the end of training, so that every callback's epoch end counts.

    `traces`: a live trace counter; None counts the model's steps from `on_train_begin`.
    """

    def __init__(self, examples: int, traces: collections.Counter | None = None) -> None:
        super().__init__()
        self.examples, self.traces = examples, traces
        self.epochs: list = []  # (train seconds, hook seconds, traces, RSS MB) per epoch
        self.pauses: list = []  # (pause seconds, epoch seconds) per epoch after the first
        self._train_end = None
        self._begin = None

    def on_train_begin(self, logs=None) -> None:
        if self.traces is None:
            self.traces = tracing.count_traces(self.model)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._note_pause()
        self._begin, self._train_end = (time.perf_counter(), HOOKS.seconds), None

    def on_train_end(self, logs=None) -> None:
        self._note_pause()

    def _note_pause(self) -> None:
        if self._train_end and len(self.epochs) > 1:  # the first epoch's end traces
            now = time.perf_counter()
            self.pauses.append((now - self._train_end[0], now - self._begin[0]))
        self._train_end = None

    def on_test_begin(self, logs=None) -> None:
        self._train_end = self._train_end or (time.perf_counter(), HOOKS.seconds)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.on_test_begin()
        seconds, hooks = (end - begin for begin, end in zip(self._begin, self._train_end))
        self.epochs.append((seconds, hooks, sum(self.traces.values()), memory_mb()["rss"]))

    def record(self) -> dict:
        """The run's figures, from the epochs after the first (which traces)."""
        seconds, hooks, traces, rss = zip(*self.epochs)
        timed = sum(seconds[1:])
        return {
            "examples_per_second": self.examples * len(seconds[1:]) / timed,
            "epoch_examples_per_second": [self.examples / s for s in seconds[1:]],
            "hook_share": sum(hooks[1:]) / timed,
            "retraces_after_first_epoch": traces[-1] - traces[0],
            "rss_growth_ep2_to_last_mb": rss[-1] - rss[1] if len(rss) >= 3 else None,
            "pause_share": (
                sum(p for p, _ in self.pauses) / sum(t for _, t in self.pauses)
                if self.pauses
                else None
            ),
        }


# --- Baselines and ceiling --------------------------------------------------------------


def _datasets(splits: data.Splits, batch_size: int) -> tuple:
    """Tutorial-style cache -> shuffle -> batch, and the validation set."""
    train_set = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
        .cache()
        .shuffle(splits.train_size, seed=SEED)
        .batch(batch_size)
    )
    return train_set, pipeline.validation_dataset(splits.x_val, splits.y_val, batch_size=batch_size)


class TapeStep:
    """The tutorial's GradientTape train and test steps, with the task's loss and
    metrics and an optimizer of their own; `traces` counts their traces."""

    def __init__(self, model: keras.Model, num_classes: int) -> None:
        self.model, self.traces = model, collections.Counter()
        self.optimizer = task.optimizer("nadam", 1e-3)
        self.optimizer.build(model.trainable_variables)
        self.loss_fn = task.loss(num_classes)
        self.metrics = [keras.metrics.Mean(), *task.metrics(num_classes)]
        self.train, self.test = tf.function(self._train), tf.function(self._test)

    def _train(self, x, y):
        self.traces["train"] += 1
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.loss_fn(y, y_pred)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        self._update(loss, y, y_pred)

    def _test(self, x, y):
        self.traces["test"] += 1
        y_pred = self.model(x, training=False)
        self._update(self.loss_fn(y, y_pred), y, y_pred)

    def _update(self, loss, y, y_pred) -> None:
        self.metrics[0].update_state(loss)
        for metric in self.metrics[1:]:
            metric.update_state(y, y_pred)

    def sync(self) -> None:
        """Waits for the steps so far (reads the loss) and resets the metrics."""
        float(self.metrics[0].result())
        for metric in self.metrics:
            metric.reset_state()

    def in_a_loop(self) -> Callable:
        """A compiled `tf.range` loop of train steps on `batches` (a batch or an iterator)."""

        @tf.function
        def run_steps(batches, count):
            for _ in tf.range(count):
                self.train(*(next(batches) if isinstance(batches, tf.data.Iterator) else batches))

        return run_steps


def bare(
    variant: str,
    splits: data.RunData,
    batch_size: int,
    epochs: int,
    num_words: int,
    sets: tuple | None = None,
    logdir: str | None = None,
) -> dict:
    """Trains a baseline of `bench.BASELINES` once: the harness's `sequential` model for
    the data, seeded, compiled as the harness compiles it (the tape steps: the same
    loss, metrics and optimizer), on `sets` (batched train and validation datasets; None:
    the harness's arrays in a tutorial-style pipeline). `logdir`: where Keras's own
    TensorBoard and ModelCheckpoint write (bare-fit-keras-logging)."""
    steps = math.ceil(splits.train_size / batch_size)
    keras.utils.set_random_seed(SEED)
    run_task = task.SingleOutput(splits.num_classes, splits.targets)
    model = models.build("sequential", splits.input_spec(), run_task, num_words, splits.features())
    recorder = Recorder(splits.train_size)
    if variant == "ceiling":
        batch = tuple(tf.constant(a) for a in splits.probe(batch_size))
        recorder.examples = steps * len(batch[0])
    else:
        endless = variant in ("bare-fit-stream", "bare-tape-ingraph")
        train_set, validation = sets or _datasets(splits, batch_size)
        train_set = (train_set.repeat() if endless else train_set).prefetch(tf.data.AUTOTUNE)
    if "tape" in variant or variant == "ceiling":
        step = TapeStep(model, splits.num_classes)
        recorder.traces, run_steps = step.traces, step.in_a_loop()
        train_step, test_step, sync = step.train, step.test, step.sync
    else:
        compile_args, _ = task.compile_args(splits.num_classes)
        model.compile(optimizer=task.optimizer("nadam", 1e-3), **compile_args)
        recorder.traces = tracing.count_traces(model)
        train_step, test_step, sync = model.train_on_batch, model.test_on_batch, lambda: None
    if variant.startswith("bare-fit"):
        logging = []
        if variant == "bare-fit-keras-logging":  # what the harness logs, the Keras way
            logging = [
                keras.callbacks.TensorBoard(logdir, histogram_freq=1, update_freq=100),
                keras.callbacks.ModelCheckpoint(os.path.join(logdir, "model.keras")),
            ]
        model.fit(
            train_set,
            epochs=epochs,
            validation_data=validation,
            verbose=0,
            steps_per_epoch=steps if endless else None,
            callbacks=[recorder, *logging],
        )
        return recorder.record()
    stream = iter(train_set) if variant == "bare-tape-ingraph" else None
    for epoch in range(epochs):
        recorder.on_epoch_begin(epoch)
        if variant == "ceiling":
            run_steps(batch, tf.constant(steps))
        elif stream:
            run_steps(stream, tf.constant(steps))
        else:
            for x, y in train_set:
                train_step(x, y)
        sync()
        recorder.on_test_begin()
        if variant != "ceiling":
            for x, y in validation:
                test_step(x, y)
            sync()
        recorder.on_epoch_end(epoch)
    return recorder.record()


# --- The harness ------------------------------------------------------------------------


class InterleavedCeiling(keras.callbacks.Callback):
    """Runs the ceiling after each of the harness's executions, on the same model.

    Each execution is timed from the end of the previous ceiling call (the loop's
    Python and hooks count); then the compiled step runs as many steps on one
    in-memory batch. Both run within a second or so on a machine whose speed
    drifts over seconds, so their ratio is paired far more tightly than two runs'.
    The ceiling trains the harness's weights too: only the times mean anything.
    """

    def __init__(self, batch: tuple, num_classes: int) -> None:
        super().__init__()
        self.batch = tuple(tf.constant(a) for a in batch)
        self.num_classes = num_classes
        self.pairs: list = []  # (epoch, steps, harness seconds, ceiling seconds)

    def on_train_begin(self, logs=None) -> None:
        self._step = TapeStep(self.model, self.num_classes)
        self._run_steps = self._step.in_a_loop()
        self._ceiling(1)  # traced here, not inside a timed pair

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch, self._mark = epoch, time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self._first = batch

    def on_train_batch_end(self, batch, logs=None) -> None:
        harness = time.perf_counter() - self._mark
        steps = batch - self._first + 1
        self.pairs.append((self._epoch, steps, harness, self._ceiling(steps)))
        self._mark = time.perf_counter()

    def _ceiling(self, steps: int) -> float:
        start = time.perf_counter()
        self._run_steps(self.batch, tf.constant(steps))
        self._step.sync()
        return time.perf_counter() - start


def run_harness(config: Config, train_size: int, print_fn: Callable, callbacks: tuple = ()) -> dict:
    """One harness run (each epoch one pass over the data), timed as the baselines are."""
    recorder = Recorder(train_size)
    train(config, print_fn=print_fn, callbacks=[recorder, *callbacks])
    return recorder.record()
