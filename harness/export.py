"""Exporting the trained model as a TensorFlow SavedModel for serving."""

import os

import keras
import tensorflow as tf

from harness import rundir

SAVED_MODEL_DIR = "saved_model"


def saved_model(run_dir: str, model: keras.Model, sample_input) -> str:
    """Writes `<run_dir>/saved_model` with a `serve` signature (Keras's `model.export`).

    The best model (`best.keras`, loaded in Keras's safe mode) is exported when
    the run kept one, otherwise `model` as trained. The serving signature takes
    inputs shaped like `sample_input` with any batch size (a reloaded subclassed
    model cannot tell Keras its inputs itself). An earlier export is replaced.

    Returns:
        The SavedModel's path.
    """
    best = os.path.join(run_dir, rundir.BEST_MODEL_FILE)
    if os.path.exists(best):
        model = keras.saving.load_model(best, safe_mode=True)
    signature = tf.nest.map_structure(
        lambda array: tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype)),
        sample_input)
    path = os.path.join(run_dir, SAVED_MODEL_DIR)
    model.export(path, format="tf_saved_model", verbose=False, input_signature=[signature])
    return path


def how_to_load(path: str, sample_input) -> str:
    """The lines that tell a user how to serve the export, with its input format."""
    def describe(array) -> str:
        return f"{array.dtype} [batch, {', '.join(map(str, array.shape[1:]))}]"

    if isinstance(sample_input, dict):
        inputs = "{" + ", ".join(f"{name!r}: {describe(array)}"
                                 for name, array in sample_input.items()) + "}"
    else:
        inputs = describe(sample_input)
    return (f"harness: SavedModel written to {path}\n"
            f"  load it with: tf.saved_model.load({path!r}).serve(inputs)  # inputs: {inputs}")
