"""The variants `scripts/bench.py` measures, each trained once and timed the same way.

- Baselines, written plainly with TensorFlow and Keras only (this module never
  imports the harness; `run_harness` imports it when called): bare `fit`, a
  `@tf.function` GradientTape step called from a Python `for x, y in ds` loop,
  and a `train_on_batch` loop.
- The compute ceiling: the bare tape loop's compiled step run `steps` times on
  one batch already in memory, inside a `tf.range` loop in one `tf.function`.
- The harness: `harness.train.train(Config(...))` in any of its modes.

Every variant returns the same record, one entry per epoch: the training
examples of the epoch, its training seconds (epoch begin to the start of
validation, as the harness's own `epoch_examples_per_second` counts them), the
CPU seconds this process spent in that time (all its threads), the seconds
Python's garbage collector ran in it and its full collections, the trace
counts so far and the resident memory at the epoch's end.

Import this module only after KERAS_HOME is set: Keras reads it at import.
"""

import contextlib
import gc
import inspect
import math
import os
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from keras import layers

SEED = 42  # the harness's default --seed; the Reuters split depends on it
REUTERS_TRAIN = 8982  # keras.datasets.reuters train split (test_split=0.2)
SYNTHETIC_VALIDATION_FRACTION = 0.2  # like the harness's synthetic data


# --- Memory -----------------------------------------------------------------------------


def memory_mb() -> dict:
    """This process's resident memory now (`rss`) and its high-water mark (`hwm`), in MB.

    Read from /proc/self/status. Not `ru_maxrss`: Linux carries the parent's
    peak into a child across fork+exec, so a subprocess's ru_maxrss is at least
    the RSS of the process that started it.
    """
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[2:5].lower()] = int(line.split()[1]) / 1024
    return values


def reset_peak_memory() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- Data -------------------------------------------------------------------------------


class Data:
    """Padded int32 train/validation arrays."""

    def __init__(self, x_train, y_train, x_val, y_val, num_classes: int, source: str):
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.num_classes = num_classes
        self.source = source

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_val, self.y_val))


def load_reuters(*, num_words: int, max_len: int, num_examples: Optional[int]) -> Data:
    """Reuters through `keras.datasets` (KERAS_HOME must hold datasets/reuters.npz),
    split with the harness's seed, 'pre'-padded like the tutorials."""
    (x_train, y_train), (x_val, y_val) = keras.datasets.reuters.load_data(
        path="reuters.npz", num_words=num_words, seed=SEED)
    pad = lambda s: keras.utils.pad_sequences(s, maxlen=max_len, dtype="int32")  # noqa: E731
    x_train, x_val = pad(x_train), pad(x_val)
    y_train, y_val = y_train.astype(np.int32), y_val.astype(np.int32)
    if num_examples:
        x_train, y_train = x_train[:num_examples], y_train[:num_examples]
    return Data(x_train, y_train, x_val, y_val, 46, "reuters")


def synthetic(*, num_examples: int, num_words: int, max_len: int,
              num_classes: int = 46) -> Data:
    """Reuters-shaped random tokens, pre-padded to varying lengths, with a 20%
    validation split like the harness's synthetic set (same shapes, not the same
    values: the cost of a step does not depend on the token values)."""
    rng = np.random.default_rng(SEED)
    n_val = max(1, int(num_examples * SYNTHETIC_VALIDATION_FRACTION))
    n = num_examples + n_val
    x = rng.integers(3, num_words, size=(n, max_len), dtype=np.int32)
    lengths = rng.integers(max(2, max_len // 4), max_len + 1, size=n)
    x[np.arange(max_len)[None, :] < (max_len - lengths)[:, None]] = 0
    y = rng.integers(0, num_classes, size=n, dtype=np.int32)
    return Data(x[:num_examples], y[:num_examples], x[num_examples:], y[num_examples:],
                num_classes, "synthetic")


def train_dataset(data: Data, batch_size: int) -> tf.data.Dataset:
    return (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).cache()
            .shuffle(len(data.x_train), seed=SEED).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def stream_dataset(data: Data, batch_size: int) -> tf.data.Dataset:
    """One endless stream over every epoch (`.repeat()`), like the harness's."""
    return (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).cache()
            .shuffle(len(data.x_train), seed=SEED).batch(batch_size).repeat()
            .prefetch(tf.data.AUTOTUNE))


def val_dataset(data: Data, batch_size: int) -> tf.data.Dataset:
    return (tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).cache()
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def build_model(max_len: int, num_words: int, num_classes: int) -> keras.Model:
    """The harness's `sequential` model, written out again."""
    return keras.Sequential([
        keras.Input(shape=(max_len,), dtype="int32"),
        layers.Embedding(num_words, 7),
        layers.Conv1D(64, 5, activation="relu"),
        layers.MaxPool1D(2),
        layers.Conv1D(32, 3, activation="relu"),
        layers.MaxPool1D(2),
        layers.Flatten(),
        layers.Dense(num_classes, activation="softmax"),
    ])


def metrics() -> list:
    """The harness's default metrics for a multi-class task (accuracy and top-5
    accuracy), so that the baselines do the same work per step as the harness."""
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")]


def compiled_model(data: Data, max_len: int, num_words: int) -> keras.Model:
    model = build_model(max_len, num_words, data.num_classes)
    model.compile(optimizer=keras.optimizers.Nadam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=metrics())
    return model


# --- Recording --------------------------------------------------------------------------


class GarbageCollections:
    """The seconds this process has spent in Python's garbage collector so far,
    and how many of its collections were full ones (generation 2)."""

    def __init__(self):
        self.seconds, self.full, self._start = 0.0, 0, None
        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.full += info["generation"] == 2
            self._start = None


COLLECTIONS = GarbageCollections()


class BatchHookTime:
    """The seconds this process has spent in `keras.callbacks.CallbackList`'s
    train-batch hooks so far (every loop that calls callbacks calls them there):
    what a run's batch-level callbacks, its logging among them, cost directly,
    which drift of the machine's speed barely touches."""

    def __init__(self):
        self.seconds = 0.0
        cls = keras.callbacks.CallbackList
        for name in ("on_train_batch_begin", "on_train_batch_end"):
            setattr(cls, name, self._timed(getattr(cls, name)))

    def _timed(self, hook):
        def timed(callbacks, batch, logs=None):
            start = time.perf_counter()
            hook(callbacks, batch, logs)
            self.seconds += time.perf_counter() - start
        return timed


HOOKS = BatchHookTime()


class Recorder:
    """Times epochs and takes a snapshot of traces and memory at each epoch end."""

    def __init__(self, traces: Callable[[], dict]):
        self.traces = traces
        self.epochs: list = []
        self._begin = self._train_end = None

    @staticmethod
    def _clocks() -> tuple:
        return (time.perf_counter(), time.process_time(), COLLECTIONS.seconds,
                COLLECTIONS.full, HOOKS.seconds)

    def begin(self) -> None:
        self._begin, self._train_end = self._clocks(), None

    def train_done(self) -> None:
        if self._train_end is None:
            self._train_end = self._clocks()

    def end(self, examples: int) -> None:
        self.train_done()
        wall, cpu, gc_seconds, full, hooks = (b - a for a, b in zip(self._begin,
                                                                    self._train_end))
        self.epochs.append({"examples": int(examples),
                            "train_seconds": wall,
                            "train_cpu_seconds": cpu,
                            "gc_seconds": gc_seconds,
                            "full_collections": full,
                            "hook_seconds": hooks,
                            "traces": dict(self.traces() or {}),
                            "rss_mb": memory_mb()["rss"]})


def count_step_traces(model: keras.Model) -> dict:
    """Counts traces of Keras's train/test step: its Python body runs only while
    a `tf.function` traces it (wraps the instance's `train_step`/`test_step`)."""
    counts = {"train": 0, "test": 0}
    for kind in ("train", "test"):
        original = getattr(model, f"{kind}_step")

        def counting(data, _original=original, _kind=kind):
            counts[_kind] += 1
            return _original(data)

        setattr(model, f"{kind}_step", counting)
    return counts


# --- Baselines and ceiling --------------------------------------------------------------


def epoch_timer(recorder: "Recorder", n: int) -> keras.callbacks.Callback:
    """A callback that times `fit`'s epochs (training part) into `recorder`."""

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            recorder.begin()

        def on_test_begin(self, logs=None):
            recorder.train_done()

        def on_epoch_end(self, epoch, logs=None):
            recorder.end(n)

    return Timer()


def _keras_baseline(data: Data, max_len: int, num_words: int) -> tuple:
    """A seeded, compiled bare model and a recorder that snapshots its step traces."""
    keras.utils.set_random_seed(SEED)
    model = compiled_model(data, max_len, num_words)
    counts = count_step_traces(model)
    return model, Recorder(lambda: counts)


def bare_fit(data: Data, *, batch_size: int, epochs: int, max_len: int,
             num_words: int) -> list:
    model, recorder = _keras_baseline(data, max_len, num_words)
    n = len(data.x_train)

    model.fit(train_dataset(data, batch_size), epochs=epochs,
              validation_data=val_dataset(data, batch_size),
              callbacks=[epoch_timer(recorder, n)], verbose=0,
              shuffle=False)  # the dataset shuffles; Keras warns if shuffle=True
    return recorder.epochs


def bare_fit_stream(data: Data, *, batch_size: int, epochs: int, max_len: int,
                    num_words: int) -> list:
    """`fit` on one endless stream (`.repeat()`, `steps_per_epoch`): one iterator for
    the whole run, so no epoch waits for a fresh iterator to refill its shuffle buffer."""
    model, recorder = _keras_baseline(data, max_len, num_words)
    n = len(data.x_train)
    model.fit(stream_dataset(data, batch_size), epochs=epochs,
              steps_per_epoch=math.ceil(n / batch_size),
              validation_data=val_dataset(data, batch_size),
              callbacks=[epoch_timer(recorder, n)], verbose=0)
    return recorder.epochs


def bare_train_on_batch(data: Data, *, batch_size: int, epochs: int, max_len: int,
                        num_words: int) -> list:
    model, recorder = _keras_baseline(data, max_len, num_words)
    train, validation = train_dataset(data, batch_size), val_dataset(data, batch_size)
    for _ in range(epochs):
        recorder.begin()
        for x, y in train:
            model.train_on_batch(x, y)
        recorder.train_done()
        for x, y in validation:
            model.test_on_batch(x, y)
        recorder.end(len(data.x_train))
    return recorder.epochs


class _TapeStep:
    """The tutorial's GradientTape step and test step, with the loss and `metrics()`."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.optimizer = keras.optimizers.Nadam(1e-3)
        self.optimizer.build(model.trainable_variables)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.loss = keras.metrics.Mean()
        self.metrics = metrics()
        self.train = tf.function(self._train)
        self.test = tf.function(self._test)

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
        self.loss.update_state(loss)
        for metric in self.metrics:
            metric.update_state(y, y_pred)

    def reset(self) -> None:
        for metric in (self.loss, *self.metrics):
            metric.reset_state()

    def sync(self) -> float:
        return float(self.loss.result())

    def traces(self) -> dict:
        return {"train": self.train.experimental_get_tracing_count(),
                "test": self.test.experimental_get_tracing_count()}


def bare_tape(data: Data, *, batch_size: int, epochs: int, max_len: int,
              num_words: int) -> list:
    keras.utils.set_random_seed(SEED)
    step = _TapeStep(build_model(max_len, num_words, data.num_classes))
    train = train_dataset(data, batch_size)

    def train_epoch():
        for x, y in train:
            step.train(x, y)

    return _tape_epochs(step, Recorder(step.traces), train_epoch, data, batch_size, epochs)


def bare_tape_ingraph(data: Data, *, batch_size: int, epochs: int, max_len: int,
                      num_words: int) -> list:
    """The best tape loop ../shared/DESIGN.md measured: the step run in a `tf.range`
    loop inside one compiled call per epoch, pulling its batches from the iterator
    there (no Python per step), on one endless stream like the harness's."""
    keras.utils.set_random_seed(SEED)
    step = _TapeStep(build_model(max_len, num_words, data.num_classes))
    stream = iter(stream_dataset(data, batch_size))
    steps = tf.constant(math.ceil(len(data.x_train) / batch_size))

    @tf.function
    def run_steps(iterator, count):
        for _ in tf.range(count):
            step.train(*next(iterator))

    recorder = Recorder(lambda: {"train": run_steps.experimental_get_tracing_count(),
                                 "test": step.test.experimental_get_tracing_count()})
    return _tape_epochs(step, recorder, lambda: run_steps(stream, steps), data, batch_size,
                        epochs)


def _tape_epochs(step: "_TapeStep", recorder: Recorder, train_epoch: Callable[[], None],
                 data: Data, batch_size: int, epochs: int) -> list:
    """The bare tape loops' epochs: `train_epoch()` timed, then the validation pass."""
    validation = val_dataset(data, batch_size)
    for _ in range(epochs):
        step.reset()
        recorder.begin()
        train_epoch()
        step.sync()
        recorder.train_done()
        step.reset()
        for x, y in validation:
            step.test(x, y)
        step.sync()
        recorder.end(len(data.x_train))
    return recorder.epochs


def ceiling(data: Data, *, batch_size: int, epochs: int, max_len: int,
            num_words: int) -> list:
    """Each "epoch" is one call running as many steps as an epoch has, on one batch."""
    keras.utils.set_random_seed(SEED)
    step = _TapeStep(build_model(max_len, num_words, data.num_classes))
    x = tf.constant(data.x_train[:batch_size])
    y = tf.constant(data.y_train[:batch_size])
    steps = math.ceil(len(data.x_train) / batch_size)

    @tf.function
    def run_steps(x, y, n):
        for _ in tf.range(n):
            step.train(x, y)

    recorder = Recorder(lambda: {"train": run_steps.experimental_get_tracing_count()})
    for _ in range(epochs):
        step.reset()
        recorder.begin()
        run_steps(x, y, tf.constant(steps))
        step.sync()
        recorder.end(steps * len(x))
    return recorder.epochs


BASELINES = {"bare-fit": bare_fit, "bare-fit-stream": bare_fit_stream, "bare-tape": bare_tape,
             "bare-tape-ingraph": bare_tape_ingraph,
             "bare-train_on_batch": bare_train_on_batch, "ceiling": ceiling}


# --- The harness ------------------------------------------------------------------------


class _EpochTimer(keras.callbacks.Callback):
    """Times epochs like the baselines' timer, as one more callback of the harness
    (driven in every loop); snapshots the harness's live trace counter."""

    def __init__(self, examples_for_epoch: Callable[[int], int]):
        super().__init__()
        self.recorder = Recorder(lambda: self.counter)
        self.examples_for_epoch = examples_for_epoch
        self.counter = None

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.begin()

    def on_test_begin(self, logs=None):
        self.recorder.train_done()

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.end(self.examples_for_epoch(epoch))

    @contextlib.contextmanager
    def counting_traces(self):
        """Keeps a handle on the counter `harness.tracing.count_traces` returns (the
        one `Result.trace_counts` copies at the end), to read it at epoch ends."""
        from harness import tracing
        original = tracing.count_traces

        def count_traces(model):
            self.counter = original(model)
            return self.counter

        tracing.count_traces = count_traces
        try:
            yield
        finally:
            tracing.count_traces = original

    @contextlib.contextmanager
    def driven_by_every_callback_list(self):
        """For a harness whose `train()` takes no extra callbacks: hooks the timer
        into every `keras.callbacks.CallbackList` (the one object all loops drive)."""
        cls = keras.callbacks.CallbackList
        names = ("on_epoch_begin", "on_test_begin", "on_epoch_end")
        saved = {name: cls.__dict__[name] for name in names}
        timer = self

        def on_epoch_begin(self, epoch, logs=None):
            saved["on_epoch_begin"](self, epoch, logs)
            timer.on_epoch_begin(epoch)

        def on_test_begin(self, logs=None):
            timer.on_test_begin()
            saved["on_test_begin"](self, logs)

        def on_epoch_end(self, epoch, logs=None):
            saved["on_epoch_end"](self, epoch, logs)
            timer.on_epoch_end(epoch)

        cls.on_epoch_begin, cls.on_test_begin, cls.on_epoch_end = (
            on_epoch_begin, on_test_begin, on_epoch_end)
        try:
            yield
        finally:
            for name, method in saved.items():
                setattr(cls, name, method)


class InterleavedCeiling(keras.callbacks.Callback):
    """Runs the ceiling between the harness's executions, on the same model.

    After each execution of the harness's loop (timed from the end of the
    previous ceiling call, so the loop's own Python and hooks count), the bare
    compiled step runs the same number of steps on one batch already in memory.
    Both run within the same second or so of this machine, whose speed drifts
    over seconds, so their ratio is paired far more tightly than two runs'.
    The ceiling's steps train the harness's weights too: the run's metrics mean
    nothing, only the times do.
    """

    def __init__(self, x, y):
        super().__init__()
        self.batch = (tf.constant(x), tf.constant(y))
        self.pairs: list = []  # (epoch, steps, harness seconds, ceiling seconds)

    def on_train_begin(self, logs=None):
        step = _TapeStep(self.model)

        @tf.function
        def run_steps(x, y, n):
            for _ in tf.range(n):
                step.train(x, y)

        self._step, self._run_steps = step, run_steps
        self._ceiling(1)  # traced here, not inside a timed pair

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._mark = epoch, time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._first = batch

    def on_train_batch_end(self, batch, logs=None):
        harness = time.perf_counter() - self._mark
        steps = batch - self._first + 1
        ceiling = self._ceiling(steps)
        self.pairs.append((self._epoch, steps, harness, ceiling))
        self._mark = time.perf_counter()

    def _ceiling(self, steps: int) -> float:
        start = time.perf_counter()
        self._run_steps(*self.batch, tf.constant(steps))
        self._step.sync()
        return time.perf_counter() - start


def stream_examples(first_step: int, steps: int, n: int, batch_size: int) -> int:
    """Examples in global steps [first_step, first_step + steps) of the harness's
    endless stream: passes of ceil(n / batch_size) batches, the last one partial."""
    per_pass = math.ceil(n / batch_size)
    last = n - (per_pass - 1) * batch_size
    return sum(last if s % per_pass == per_pass - 1 else batch_size
               for s in range(first_step, first_step + steps))


def run_harness(mode: str, *, logging: bool, dataset: str, data_dir: Optional[str],
                num_examples: Optional[int], batch_size: int, epochs: int, max_len: int,
                num_words: int, logdir: str, run_name: str, extra: Optional[dict] = None,
                print_fn: Callable[[str], None] = lambda line: None,
                more_callbacks: tuple = ()) -> dict:
    """One harness run; returns its epochs (timed by the bench), the trace counts
    it reports, and its own `epoch_examples_per_second` from the event files."""
    from harness.config import Config
    from harness.train import train

    options = dict(mode=mode, dataset=dataset, data_dir=data_dir, epochs=epochs,
                   batch_size=batch_size, max_len=max_len, num_words=num_words,
                   logdir=logdir, run_name=run_name, verbose=0, seed=SEED,
                   summary_every_steps=100 if logging else 0,
                   histogram_freq=1 if logging else 0)
    options["num_examples"] = num_examples  # Reuters: the first N, like load_reuters
    n_full = num_examples or REUTERS_TRAIN
    options.update(extra or {})
    config = Config(**options)
    steps = config.steps_per_epoch or math.ceil(n_full / batch_size)
    timer = _EpochTimer(
        lambda epoch: stream_examples(epoch * steps, steps, n_full, batch_size))
    with timer.counting_traces():
        if "callbacks" in inspect.signature(train).parameters:
            result = train(config, print_fn=print_fn, callbacks=[timer, *more_callbacks])
        else:
            with timer.driven_by_every_callback_list():
                result = train(config, print_fn=print_fn)
    return {"epochs": timer.recorder.epochs, "trace_counts": _plain(result.trace_counts),
            "event_examples_per_second": _event_scalars(result.run_dir, "train",
                                                        "epoch_examples_per_second"),
            "run_dir": result.run_dir}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, type(None))) else str(value)


def _event_scalars(run_dir: str, split: str, tag: str) -> dict:
    """{epoch: value} of a TF2 scalar (a tensor summary) in `run_dir/split`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    path = os.path.join(run_dir, split)
    if not os.path.isdir(path):
        return {}
    accumulator = EventAccumulator(path, size_guidance={"tensors": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("tensors", []):
        return {}
    return {int(e.step): float(tf.make_ndarray(e.tensor_proto))
            for e in accumulator.Tensors(tag)}
