"""Counting how often the train and test steps are traced, in any loop.

All three loops compute the loss through `model.compute_loss` inside a
compiled function, so Python runs it only while tracing. Wrapping it on the
model instance counts traces of the train step (`training=True`) and the test
step (`training=False`) the same way for `fit`, `train_on_batch` and `tape`.
A count that grows after the first epoch means the step is being retraced.
"""

import collections

import keras


def count_traces(model: keras.Model) -> collections.Counter:
    """Starts counting traces of `model`'s steps; returns the live counter
    with keys "train" and "test"."""
    counts: collections.Counter = collections.Counter()
    compute_loss = model.compute_loss

    def counting_compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        counts["train" if training else "test"] += 1
        return compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    model.compute_loss = counting_compute_loss
    return counts
