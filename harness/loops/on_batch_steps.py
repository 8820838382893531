"""The steps of the `train_on_batch` loop: `OnBatchSteps` and compiled metric resets.

Imported when the loop runs (it imports TensorFlow); see `train_on_batch.py`.
"""

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from harness.loops.base import Logs
from harness.pipeline import TrainStream


@contextlib.contextmanager
def compiled_metric_resets(model: keras.Model):
    """Lets `train_on_batch` / `test_on_batch` reset the metrics in one compiled call.

    Keras 3 resets every metric at the start of each `*_on_batch` call, one
    eager assign per metric variable; one compiled call is several times cheaper
    (docs/performance.md). The first reset stays
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


class OnBatchSteps:
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
        self._restored: np.ndarray | None = None

    def get_state(self) -> np.ndarray:
        """The running state as [examples, sum of each log by name]: a `MetricState`."""
        return np.array(
            [self._count, *(self._sums[name] for name in sorted(self._sums))], dtype=np.float64
        )

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


def _eager_batch_size(x) -> int:
    """The number of examples in an eager batch, from its static shape (no op, no sync)."""
    return len(tf.nest.flatten(x)[0])
