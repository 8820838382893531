"""A callback base class that knows the global training step.

Keras passes batch hooks the index of the batch *within the epoch*; TensorBoard
curves, checkpoints and profiler windows want the *global* step (the number of
optimizer updates since the run began, resumes included). `StepCallback` reads
the optimizer's `iterations` once when training begins and then counts batches
itself, so no hook pays for a device-to-host read.
"""

import keras


class StepCallback(keras.callbacks.Callback):
    """Tracks `self.global_step`: the number of train steps completed so far.

    Inside `on_train_batch_begin` it is the number of steps before this batch;
    inside `on_train_batch_end` (after the base class has run) it includes it.
    Subclasses that override the batch hooks call `super()` first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.global_step = 0

    def on_train_begin(self, logs=None) -> None:
        self.global_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.global_step += 1
