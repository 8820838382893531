"""Learning-rate halving at chosen epochs (the old recipe halved it at epoch 5).

The rate for an epoch is computed from the initial rate and the halving epochs
already reached, and *set* (not multiplied) at every epoch start, so a resumed
run lands on exactly the rate an uninterrupted run would have.
"""

from collections.abc import Callable, Sequence

import keras


class LearningRateHalving(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` at the start of each epoch in `epochs`.

    Args:
        initial_rate: the rate of epoch 1.
        epochs: 1-based epochs at whose start the rate is multiplied by `factor`.
        factor: the multiplier (0.5 halves).
        print_fn: where the change is announced.
    """

    def __init__(
        self,
        initial_rate: float,
        epochs: Sequence[int],
        factor: float = 0.5,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.initial_rate = initial_rate
        self.epochs = sorted(set(epochs))
        self.factor = factor
        self.print_fn = print_fn

    def rate_for(self, epoch: int) -> float:
        """The learning rate of 0-based `epoch`."""
        reached = sum(1 for e in self.epochs if e <= epoch + 1)
        return self.initial_rate * self.factor**reached

    @staticmethod
    def check(optimizer: keras.optimizers.Optimizer) -> None:
        """Raises ValueError if `optimizer`'s rate is a schedule, which cannot be halved."""
        # Keras 3's `learning_rate` property evaluates a schedule; `_learning_rate`
        # holds the schedule object itself (or the variable of a plain rate).
        rate = getattr(optimizer, "_learning_rate", optimizer.learning_rate)
        if not isinstance(rate, keras.Variable):
            raise ValueError(
                f"learning-rate halving needs a plain learning rate, but the optimizer "
                f"uses a schedule ({type(rate).__name__}); remove the schedule or "
                "disable halving with an empty --lr_halve_epochs"
            )

    def on_train_begin(self, logs=None) -> None:
        self.check(self.model.optimizer)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        rate = self.rate_for(epoch)
        if epoch + 1 in self.epochs:
            self.print_fn(f"Epoch {epoch + 1}: learning rate x{self.factor:g} -> {rate:.6g}")
        self.model.optimizer.learning_rate.assign(rate)
