"""Learning-rate halving at chosen epochs (the old recipe halved it at epoch 5).

The rate is *multiplied* at the start of each halving epoch (`lr_schedule.multiply`),
so a change another callback makes (a user's `ReduceLROnPlateau`) stays. The rate
(or its schedule's scale) is checkpointed: a resumed run goes on from the saved
rate, and an epoch resumed in its middle, whose halving the checkpoint already
holds, is not halved again.
"""

from collections.abc import Callable, Sequence

import keras

from . import lr_schedule


class LearningRateHalving(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` at the start of each epoch in `epochs`.

    Args:
        epochs: 1-based epochs at whose start the rate is multiplied by `factor`.
        factor: the multiplier (0.5 halves).
        print_fn: where the change is announced.
    """

    def __init__(
        self,
        epochs: Sequence[int],
        factor: float = 0.5,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.epochs = sorted(set(epochs))
        self.factor = factor
        self.print_fn = print_fn
        self._resumed_mid_epoch = False

    @staticmethod
    def check(optimizer: keras.optimizers.Optimizer) -> None:
        """Raises ValueError if `optimizer`'s rate is a schedule, which cannot be halved."""
        lr_schedule.check(optimizer)

    def on_train_begin(self, logs=None) -> None:
        self.check(self.model.optimizer)
        steps = self.params.get("steps") or 0
        step = int(self.model.optimizer.iterations.numpy())
        self._resumed_mid_epoch = bool(steps) and step % steps != 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        resumed_here, self._resumed_mid_epoch = self._resumed_mid_epoch, False
        if epoch + 1 not in self.epochs or resumed_here:
            return
        rate = lr_schedule.multiply(self.model.optimizer, self.factor)
        self.print_fn(f"Epoch {epoch + 1}: learning rate x{self.factor:g} -> {rate:.6g}")
