"""One TensorBoard summary writer for every loop.

`TensorBoardSummaries` writes, under a run directory, what Keras's own
TensorBoard callback writes only inside `fit` — and more — identically for
`fit`, `train_on_batch` and a `GradientTape` loop:

- `train/` and `validation/` event files (TensorBoard's convention), per epoch
  (step = 1-based epoch): `epoch_loss`, `epoch_<metric>`, and in `train/` also
  `epoch_learning_rate`, `epoch_examples_per_second`, `epoch_seconds`;
- every `every_steps` train steps (step = global step): `batch_loss` (the
  running average of the epoch so far, as the progress bar shows it) and
  `batch_learning_rate`;
- every `histogram_freq` epochs: a histogram of every trainable weight and of
  its gradient, the gradient computed on a fixed probe batch (so `fit` gets
  gradient histograms too, computed the same way as in the other loops);
- after every epoch, in `validation/` at the global step:
  `evaluation_<metric>_vs_iterations` (Keras's name), so runs of other batch
  sizes or epoch lengths line up;
- in `model/`, at the global step: what the model's own `tf.summary` calls
  write, every `every_steps` train steps;
- once per run: the op graph of a train step (forward, loss, gradients,
  optimizer update) traced on the probe batch, for the Graphs tab; and in the
  run directory itself what `run_info` writes (HParams, flags, the model's
  summary and its Keras graph).
"""

import contextlib
import os
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from . import files, run_info
from .base import StepCallback
from .events import MODEL_FOLDER, event_files, events

TRAIN, VALIDATION = run_info.TRAIN, run_info.VALIDATION
MODEL = MODEL_FOLDER  # the tf.summary calls of the model's own code
HISTOGRAM_BUCKETS = 30  # tf.summary.histogram's default
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(
    display_name=None, description=None
)


class TensorBoardSummaries(StepCallback):
    """Writes a run's TensorBoard summaries; see the module docstring.

    Args:
        run_dir: the run directory; event files go to `train/`, `validation/`
            and (hyperparameters, flags) the directory itself.
        probe_batch: a fixed (x, y) batch for the gradient histograms and the
            graph trace.
        batch_size: examples per step, for `epoch_examples_per_second`.
        every_steps: write batch scalars every this many steps (0 = never).
        histogram_freq: write histograms every this many epochs (0 = never).
        hparams: hyperparameters for the HParams tab (str, int, float, bool).
        domains: the values of the hyperparameters that have a fixed set.
        metrics: the log keys the HParams tab compares, in order (see
            `run_info.metric_order`).
        flags: every option of the run, written once as a text table.
    """

    def __init__(
        self,
        run_dir: str,
        *,
        probe_batch: tuple,
        batch_size: int,
        every_steps: int = 100,
        histogram_freq: int = 1,
        hparams: dict | None = None,
        domains: dict | None = None,
        metrics: list | None = None,
        flags: dict | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.probe_batch = probe_batch
        self.batch_size = batch_size
        self.every_steps = every_steps
        self.histogram_freq = histogram_freq
        self.run_info = {
            "hparams": hparams or {},
            "domains": domains or {},
            "metrics": metrics or ["loss"],
            "flags": flags or {},
        }
        self._writers = {}
        self._recording = contextlib.ExitStack()
        self._gradients = None
        self._epoch_start = self._train_end = 0.0
        self._epoch_first_step = 0

    def writer(self, name: str) -> tf.summary.SummaryWriter:
        """The writer for `train`, `validation` or '' (the run directory)."""
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.run_dir, name))
        return self._writers[name]

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self.global_step == 0:  # a resumed run wrote these already
            with self.writer("").as_default(step=0):
                run_info.write(self.run_dir, self.model, **self.run_info)
            self._write_graph()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch_start = time.perf_counter()
        self._train_end = 0.0
        self._epoch_first_step = self.global_step
        self._record_model_summaries()

    def on_train_batch_end(self, batch, logs=None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.crossed(self.every_steps) and logs:
            with self.writer(TRAIN).as_default(step=self.global_step):
                tf.summary.scalar("batch_loss", float(logs["loss"]))
                tf.summary.scalar("batch_learning_rate", self._learning_rate())

    def on_test_begin(self, logs=None) -> None:
        self._train_end = time.perf_counter()
        self._recording.close()

    def on_epoch_end(self, epoch, logs=None) -> None:
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._epoch_start
        examples = (self.global_step - self._epoch_first_step) * self.batch_size
        step = epoch + 1
        logs = logs or {}
        with self.writer(TRAIN).as_default(step=step):
            for name, value in logs.items():
                if not name.startswith("val_"):
                    tf.summary.scalar(f"epoch_{name}", float(value))
            tf.summary.scalar("epoch_learning_rate", self._learning_rate())
            tf.summary.scalar("epoch_examples_per_second", examples / max(train_seconds, 1e-9))
            tf.summary.scalar("epoch_seconds", now - self._epoch_start)
        with self.writer(VALIDATION).as_default(step=step):
            for name, value in logs.items():
                if name.startswith("val_"):
                    tf.summary.scalar(f"epoch_{name[4:]}", float(value))
        with self.writer(VALIDATION).as_default(step=self.global_step):
            for name, value in logs.items():  # lines up runs of other batch sizes
                if name.startswith("val_"):
                    tf.summary.scalar(f"evaluation_{name[4:]}_vs_iterations", float(value))
        if self.histogram_freq and step % self.histogram_freq == 0:
            self._write_histograms(step)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None) -> None:
        self._recording.close()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        _remove_if_empty(os.path.join(self.run_dir, MODEL))

    def _learning_rate(self) -> float:
        return float(tf.convert_to_tensor(self.model.optimizer.learning_rate))

    def _record_model_summaries(self) -> None:
        """Makes the tf.summary calls of the model's own code write to `model/` every
        `every_steps` train steps (at the step count before the step, as under Keras's
        TensorBoard callback), also inside compiled steps, which read the step and the
        condition from variables: no retracing. Validation and the probe computations
        run outside it (see `on_test_begin`), so they record nothing."""
        if not self.every_steps:
            return
        iterations = self.model.optimizer.iterations
        self._recording.enter_context(self.writer(MODEL).as_default(step=iterations))
        self._recording.enter_context(
            tf.summary.record_if(lambda: tf.equal(iterations % self.every_steps, 0))
        )

    def _write_graph(self) -> None:
        """Traces one train step on the probe batch (without running it)."""
        model = self.model

        def train_step(x, y):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        def on_replicas(x, y):  # the optimizer update needs a replica context
            return tf.distribute.get_strategy().run(train_step, args=(x, y))

        graph = tf.function(on_replicas).get_concrete_function(*self.probe_batch).graph
        with self.writer(TRAIN).as_default(step=0):
            tf.summary.graph(graph)
            run_info.write_keras_graph(model)

    def _write_histograms(self, step: int) -> None:
        if self._gradients is None:
            self._gradients = probe_gradients(self.model)
        gradients = self._gradients(*self.probe_batch)
        with self.writer(TRAIN).as_default(step=step):
            for variable, gradient in zip(self.model.trainable_variables, gradients):
                write_histogram(variable.path, variable)
                write_histogram(f"{variable.path}/gradient", gradient)


def _remove_if_empty(folder: str) -> None:
    """Removes `folder` if its event files hold no summary: a model that calls no
    tf.summary leaves no empty `model` run in TensorBoard."""
    if os.path.isdir(folder) and not any(event.summary.value for event in events(folder)):
        files.remove(event_files(folder))  # best-effort: a read-only folder keeps it
        with contextlib.suppress(OSError):  # something else is in it
            os.rmdir(folder)


def probe_gradients(model: keras.Model) -> Callable:
    """A compiled `(x, y) -> [gradient of each trainable variable]` of the model's loss
    on one batch, in inference mode; under a strategy every replica sees the whole
    batch and the first replica's result is taken."""

    def replica_gradients(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=False)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            # Under a strategy Keras divides the loss by the replicas; undo it.
            loss *= tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
        return tape.gradient(loss, model.trainable_variables)

    def gradients(x, y):
        strategy = tf.distribute.get_strategy()
        per_replica = strategy.run(replica_gradients, args=(x, y))
        return [strategy.experimental_local_results(g)[0] for g in per_replica]

    return tf.function(gradients)


def write_histogram(tag: str, values) -> None:
    """Writes what `tf.summary.histogram(tag, values)` writes, to the default writer
    at its default step, with the buckets counted in NumPy (see `histogram_buckets`)."""
    values = tf.convert_to_tensor(values).numpy()  # IndexedSlices gradients too
    tf.summary.write(tag, histogram_buckets(values), metadata=_HISTOGRAM_METADATA)


def histogram_buckets(values: np.ndarray, bucket_count: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """Rows of [left edge, right edge, count], the buckets `tf.summary.histogram`
    makes: `bucket_count` equal buckets from the minimum to the maximum, the maximum
    in the last; all values in the last if they are equal; all zeros if there are
    none. Non-finite values are left out (TensorFlow's version counts NaN nowhere).

    TensorFlow's own counts with a [values, buckets] float64 one-hot matrix (26 MB
    for the sequential model's head kernel), op by op in eager mode; `np.bincount`
    needs one index per value, and is several times faster (docs/performance.md).
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = data.min(), data.max()
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        return np.stack([np.full(bucket_count, high), np.full(bucket_count, high), counts], axis=1)
    indices = np.floor((data - low) / ((high - low) / bucket_count)).astype(np.int64)
    counts = np.bincount(np.minimum(indices, bucket_count - 1), minlength=bucket_count)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
