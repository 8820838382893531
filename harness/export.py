"""Exporting the trained model as a TensorFlow SavedModel for serving."""

import os

import keras

from harness import rundir

SAVED_MODEL_DIR = "saved_model"


def saved_model(run_dir: str, model: keras.Model) -> str:
    """Writes `<run_dir>/saved_model` with a `serve` signature (Keras's `model.export`).

    The best model (`best.keras`, loaded in Keras's safe mode) is exported when
    the run kept one, otherwise `model` as trained. An earlier export is replaced.

    Returns:
        The SavedModel's path.
    """
    best = os.path.join(run_dir, rundir.BEST_MODEL_FILE)
    if os.path.exists(best):
        model = keras.saving.load_model(best, safe_mode=True)
    path = os.path.join(run_dir, SAVED_MODEL_DIR)
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def how_to_load(path: str) -> str:
    """The lines that tell a user how to serve the export."""
    return (f"harness: SavedModel written to {path}\n"
            f"  load it with: tf.saved_model.load({path!r}).serve(tokens)  "
            "# tokens: int32 [batch, max_len]")
