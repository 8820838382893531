"""The variants `scripts/bench.py` measures, each trained once and timed the same way.

- Baselines, plain Keras on the harness's own data (`harness.data.load`) and
  model (`harness.models.sequential`, Nadam 1e-3, the task's loss and metrics):
  bare `fit` (also on one endless stream), a `@tf.function` GradientTape step
  called from `for x, y in ds` (also in a `tf.range` loop inside one call per
  epoch), and a `train_on_batch` loop.
- The compute ceiling: the tape step run `steps` times on one in-memory batch,
  inside a `tf.range` loop in one `tf.function`.
- The harness: `harness.train(Config(...))` in any mode, timed by one more
  callback (`InterleavedCeiling` runs the ceiling between its executions).

Every variant returns one record per epoch: its training examples and seconds
(epoch begin to the start of validation, as the harness's own
`epoch_examples_per_second` counts them), CPU seconds, Python GC seconds and
full collections, seconds in the train-batch hooks, trace counts, and RSS.
"""

import functools
import gc
import math
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from harness import data, models, task, tracing, train
from harness.callbacks import events
from harness.config import Config

SEED = Config.seed


# --- Memory and clocks ------------------------------------------------------------------


def memory_mb() -> dict:
    """Resident memory now (`rss`) and its high-water mark (`hwm`), in MB, from
    /proc/self/status (not ru_maxrss, which a child inherits across fork+exec)."""
    with open("/proc/self/status") as status:
        return {
            line[2:5].lower(): int(line.split()[1]) / 1024
            for line in status
            if line.startswith(("VmRSS:", "VmHWM:"))
        }


def reset_peak_memory() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Clocks:
    """Process-wide totals: seconds in Python's GC and its full collections, and
    seconds in `CallbackList`'s train-batch hooks (what batch-level callbacks cost,
    which the machine's drifting speed barely touches)."""

    def __init__(self) -> None:
        self.gc_seconds, self.full, self.hooks, self._start = 0.0, 0, 0.0, None
        gc.callbacks.append(self._on_collection)
        for name in ("on_train_batch_begin", "on_train_batch_end"):
            cls = keras.callbacks.CallbackList
            setattr(cls, name, self._timed(getattr(cls, name)))

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.gc_seconds += time.perf_counter() - self._start
            self.full += info["generation"] == 2
            self._start = None

    def _timed(self, hook):
        def timed(callbacks, batch, logs=None):
            start = time.perf_counter()
            hook(callbacks, batch, logs)
            self.hooks += time.perf_counter() - start

        return timed

    def now(self) -> tuple:
        """(wall, CPU, GC seconds, full collections, hook seconds) so far."""
        return (time.perf_counter(), time.process_time(), self.gc_seconds, self.full, self.hooks)


CLOCKS = Clocks()


class Recorder(keras.callbacks.Callback):
    """Times epochs (training part) and snapshots traces and memory at each end;
    a callback for `fit` and the harness, called by hand in the bare loops."""

    def __init__(self, traces: Callable[[], dict], examples: Callable[[int], int]) -> None:
        super().__init__()
        self.traces, self.examples = traces, examples
        self.epochs: list = []
        self._begin = self._train_end = None

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._begin, self._train_end = CLOCKS.now(), None

    def on_test_begin(self, logs=None) -> None:
        self._train_end = self._train_end or CLOCKS.now()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.on_test_begin()
        wall, cpu, gc_seconds, full, hooks = (b - a for a, b in zip(self._begin, self._train_end))
        self.epochs.append(
            {
                "examples": int(self.examples(epoch)),
                "train_seconds": wall,
                "train_cpu_seconds": cpu,
                "gc_seconds": gc_seconds,
                "full_collections": full,
                "hook_seconds": hooks,
                "traces": dict(self.traces() or {}),
                "rss_mb": memory_mb()["rss"],
            }
        )


# --- Baselines and ceiling --------------------------------------------------------------


def load(dataset: str, data_dir, *, num_examples, num_words: int, max_len: int) -> data.Splits:
    """The harness's own data for these settings (46 Reuters classes)."""
    return data.load(
        dataset,
        num_words=num_words,
        max_len=max_len,
        seed=SEED,
        num_classes=46,
        num_examples=num_examples,
        data_dir=data_dir,
    )


def _datasets(splits: data.Splits, batch_size: int, *, endless: bool = False) -> tuple:
    """Tutorial-style cache -> shuffle -> batch -> prefetch, and the validation set."""
    train_set = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
        .cache()
        .shuffle(splits.train_size, seed=SEED)
        .batch(batch_size)
    )
    train_set = (train_set.repeat() if endless else train_set).prefetch(tf.data.AUTOTUNE)
    return train_set, data.validation_dataset(splits.x_val, splits.y_val, batch_size=batch_size)


def _model(splits: data.Splits, num_words: int, *, compiled: bool) -> keras.Model:
    """The harness's `sequential` model, seeded; compiled as the harness compiles it."""
    keras.utils.set_random_seed(SEED)
    model = models.sequential(splits.x_train.shape[1:], splits.num_classes, num_words)
    if compiled:
        compile_args, _ = task.compile_args(splits.num_classes)
        model.compile(optimizer=task.optimizer("nadam", 1e-3), **compile_args)
    return model


def _fit(
    splits: data.Splits, batch_size: int, epochs: int, num_words: int, *, endless: bool
) -> list:
    model = _model(splits, num_words, compiled=True)
    counts = tracing.count_traces(model)
    recorder = Recorder(lambda: counts, lambda _: splits.train_size)
    train_set, validation = _datasets(splits, batch_size, endless=endless)
    model.fit(
        train_set,
        epochs=epochs,
        validation_data=validation,
        verbose=0,
        steps_per_epoch=math.ceil(splits.train_size / batch_size) if endless else None,
        callbacks=[recorder],
    )
    return recorder.epochs


def bare_train_on_batch(splits: data.Splits, batch_size: int, epochs: int, num_words: int) -> list:
    """A `train_on_batch` / `test_on_batch` loop."""
    model = _model(splits, num_words, compiled=True)
    counts = tracing.count_traces(model)
    train_set, validation = _datasets(splits, batch_size)

    def epoch() -> None:
        for x, y in train_set:
            model.train_on_batch(x, y)

    def validate() -> None:
        for x, y in validation:
            model.test_on_batch(x, y)

    return _epochs(Recorder(lambda: counts, lambda _: splits.train_size), epochs, epoch, validate)


class TapeStep:
    """The tutorial's GradientTape train and test steps, with the task's loss and metrics."""

    def __init__(self, model: keras.Model, num_classes: int) -> None:
        self.model = model
        self.optimizer = task.optimizer("nadam", 1e-3)
        self.optimizer.build(model.trainable_variables)
        self.loss_fn = task.loss(num_classes)
        self.metrics = [keras.metrics.Mean(), *task.metrics(num_classes)]
        self.train, self.test = tf.function(self._train), tf.function(self._test)

    def _train(self, x, y):
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self.loss_fn(y, y_pred)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        self._update(loss, y, y_pred)

    def _test(self, x, y):
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
        """A compiled `tf.range` loop of train steps on `batches()` (a batch or an iterator)."""

        @tf.function
        def run_steps(batches, count):
            for _ in tf.range(count):
                self.train(*(next(batches) if isinstance(batches, tf.data.Iterator) else batches))

        return run_steps


def _tape(
    splits: data.Splits, batch_size: int, epochs: int, num_words: int, *, in_graph: bool
) -> list:
    step = TapeStep(_model(splits, num_words, compiled=False), splits.num_classes)
    train_set, validation = _datasets(splits, batch_size, endless=in_graph)
    if in_graph:
        run_steps, stream = step.in_a_loop(), iter(train_set)
        steps = tf.constant(math.ceil(splits.train_size / batch_size))
        epoch, traced = (lambda: run_steps(stream, steps)), run_steps
    else:

        def epoch() -> None:
            for x, y in train_set:
                step.train(x, y)

        traced = step.train

    def validate() -> None:
        step.sync()
        for x, y in validation:
            step.test(x, y)
        step.sync()

    recorder = Recorder(
        lambda: {
            "train": traced.experimental_get_tracing_count(),
            "test": step.test.experimental_get_tracing_count(),
        },
        lambda _: splits.train_size,
    )
    return _epochs(recorder, epochs, lambda: (epoch(), step.sync()), validate)


def ceiling(splits: data.Splits, batch_size: int, epochs: int, num_words: int) -> list:
    """Each "epoch" is one call running an epoch's steps on one in-memory batch."""
    step = TapeStep(_model(splits, num_words, compiled=False), splits.num_classes)
    batch = tuple(tf.constant(a) for a in splits.probe(batch_size))
    steps = math.ceil(splits.train_size / batch_size)
    run_steps = step.in_a_loop()
    recorder = Recorder(
        lambda: {"train": run_steps.experimental_get_tracing_count()},
        lambda _: steps * len(batch[0]),
    )
    return _epochs(recorder, epochs, lambda: (run_steps(batch, tf.constant(steps)), step.sync()))


def _epochs(recorder: Recorder, epochs: int, epoch: Callable, validate: Callable = None) -> list:
    """The bare loops' epochs: `epoch()` timed, then `validate()`."""
    for number in range(epochs):
        recorder.on_epoch_begin(number)
        epoch()
        recorder.on_test_begin()
        if validate:
            validate()
        recorder.on_epoch_end(number)
    return recorder.epochs


# bare-fit: a fresh iterator every epoch, as the tutorial; -stream: one endless stream.
# bare-tape: the step called from `for x, y in ds`; -ingraph: in a `tf.range` loop
# pulling its batches from one endless stream, one call per epoch.
BASELINES = {
    "bare-fit": functools.partial(_fit, endless=False),
    "bare-fit-stream": functools.partial(_fit, endless=True),
    "bare-tape": functools.partial(_tape, in_graph=False),
    "bare-tape-ingraph": functools.partial(_tape, in_graph=True),
    "bare-train_on_batch": bare_train_on_batch,
    "ceiling": ceiling,
}


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


def stream_examples(first_step: int, steps: int, n: int, batch_size: int) -> int:
    """Examples in global steps [first_step, first_step + steps) of the harness's
    endless stream: passes of ceil(n / batch_size) batches, the last one partial."""
    per_pass = math.ceil(n / batch_size)
    last = n - (per_pass - 1) * batch_size
    return sum(
        last if s % per_pass == per_pass - 1 else batch_size
        for s in range(first_step, first_step + steps)
    )


def run_harness(
    config: Config, *, train_size: int, print_fn: Callable[[str], None], more_callbacks: tuple = ()
) -> dict:
    """One harness run; its epochs as the bench times them, the trace counts it
    reports, and its own `epoch_examples_per_second` from its event files."""
    steps = data.steps_for(train_size, config.batch_size, config.steps_per_epoch)
    counter = {}
    recorder = Recorder(
        lambda: counter.get("live"),
        lambda epoch: stream_examples(epoch * steps, steps, train_size, config.batch_size),
    )
    original = tracing.count_traces

    def count_traces(model):  # keeps the live counter, to read it at epoch ends
        counter["live"] = original(model)
        return counter["live"]

    tracing.count_traces = count_traces
    try:
        result = train(config, print_fn=print_fn, callbacks=[recorder, *more_callbacks])
    finally:
        tracing.count_traces = original
    summaries = events.read(f"{result.run_dir}/train")
    return {
        "epochs": recorder.epochs,
        "trace_counts": dict(result.trace_counts or {}),
        "event_examples_per_second": dict(summaries.scalars("epoch_examples_per_second")),
        "run_dir": result.run_dir,
    }
