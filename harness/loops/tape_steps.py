"""The steps of the tape loop: `TapeSteps`, a compiled `tf.GradientTape` step, and
the static-size batches it reads.

Imported when the loop runs (it imports TensorFlow); see `tape.py`.
"""

import keras
import tensorflow as tf

from harness.loops.base import Logs
from harness.pipeline import TrainStream


class TapeSteps:
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
            logs = (
                self._one_step(iterator)
                if steps == 1
                else self._steps(iterator, tf.constant(steps))
            )
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
    over both, grappler does not fuse the convolutions with their bias adds for
    oneDNN, and the step is slower (docs/performance.md).
    """

    def __init__(self, stream: TrainStream, start_step: int, distribute) -> None:
        self._stream = stream
        self._step = start_step
        self._full = iter(distribute(stream.full_batches(start_step)))
        self.partial = (
            iter(distribute(stream.partial_batches(start_step))) if stream.partial_size else None
        )

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
