"""The per-epoch history as a JSON file, rewritten atomically at every epoch end.

Unlike Keras's in-memory `History`, it survives a crash and continues on resume:
epochs at or after the resumed epoch are dropped from the saved record first.
"""

import json
import os

import keras

from . import files


class HistoryFile(keras.callbacks.Callback):
    """Keeps `path` as {"epoch": [1, 2, ...], "<metric>": [...], ...} (1-based epochs)."""

    def __init__(self, path: str, initial_epoch: int = 0) -> None:
        super().__init__()
        self.path = path
        self.history = self._load(initial_epoch)

    def _load(self, initial_epoch: int) -> dict:
        if initial_epoch == 0 or not os.path.exists(self.path):
            return {"epoch": []}
        with open(self.path) as f:
            saved = json.load(f)
        keep = sum(1 for epoch in saved["epoch"] if epoch <= initial_epoch)
        return {name: values[:keep] for name, values in saved.items()}

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.history["epoch"].append(epoch + 1)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        files.write_text(self.path, json.dumps(self.history, indent=2))
