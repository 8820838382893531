"""A callback base class that knows the global training step.

Keras passes batch hooks the index of the batch *within the epoch* (with
`steps_per_execution` > 1, the index of the last batch of the execution);
TensorBoard curves, checkpoints and profiler windows want the *global* step
(optimizer updates since the run began, resumes included). `StepCallback`
reads the optimizer's `iterations` once when training begins and then follows
the batch indices, so no hook pays for a device-to-host read.
"""

import keras


class StepCallback(keras.callbacks.Callback):
    """Tracks `self.global_step`: the number of train steps completed so far.

    Inside `on_train_batch_begin` it is the number of steps before this batch;
    inside `on_train_batch_end` (after the base class has run) it includes it.
    Subclasses that override these hooks call `super()` first. Batch indices
    count from 0 at each epoch start (or at the resumed step of the first epoch).
    """

    def __init__(self) -> None:
        super().__init__()
        self.global_step = 0
        self.previous_step = 0
        self._last_batch = -1

    def on_train_begin(self, logs=None) -> None:
        self.global_step = self.previous_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.previous_step = self.global_step
        self.global_step += batch - self._last_batch
        self._last_batch = batch

    def crossed(self, every: int) -> bool:
        """Whether the last batch end passed a multiple of `every` steps (0 = never)."""
        return bool(every) and self.global_step // every > self.previous_step // every


def ends_epoch(global_step: int, steps_per_epoch: int) -> bool:
    """Whether `global_step` is the last step of an epoch (whose end is still to run)."""
    return bool(steps_per_epoch) and global_step > 0 and global_step % steps_per_epoch == 0
