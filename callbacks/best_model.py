"""The best model so far, saved as a `.keras` file that is never half-written."""

import keras

from . import files
from .early_stopping import improves


class BestModel(keras.callbacks.Callback):
    """Saves the model to `path` whenever `monitor` improves at an epoch end.

    Unlike `keras.callbacks.ModelCheckpoint`, the file is written atomically
    (`files.atomic_write`), so a crash during the save leaves the previous best
    model intact; and a non-finite value never counts as an improvement.

    Args:
        path: where the model goes; must end in `.keras`.
        monitor: a key of the epoch logs, e.g. `val_loss`.
        higher_is_better: whether larger values of `monitor` are better.
        best: the value to beat (e.g. the best before a resume); None = any.
    """

    def __init__(
        self, path: str, monitor: str, higher_is_better: bool, best: float | None = None
    ) -> None:
        super().__init__()
        if not path.endswith(".keras"):
            raise ValueError(f"the best model's path must end in .keras, got {path!r}")
        self.path = path
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.best = best

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not improves(float(value), self.best, self.higher_is_better):
            return
        self.best = float(value)
        files.atomic_write(self.path, self.model.save, suffix=".keras")
