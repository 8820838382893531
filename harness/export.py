"""Exporting the trained model as a TensorFlow SavedModel for serving."""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from harness import rundir
from harness.callbacks import files
from harness.errors import HarnessError

SAVED_MODEL_DIR = "saved_model"


def saved_model(run_dir: str, model: keras.Model, sample_input) -> str:
    """Writes `<run_dir>/saved_model` with a `serve` signature (Keras's `model.export`).

    `model` itself (the model in memory, as trained or restored) is exported,
    with the best model's weights when the run kept one (`best.keras`): only its
    weights are read, so a model Keras cannot load back (an unregistered custom
    layer, a Lambda layer refused by safe mode) exports all the same. Its weights
    are left replaced by the best ones. The serving signature takes inputs shaped
    like `sample_input` with any batch size. The export is written beside the run
    and renamed into place, so an earlier export is replaced only by a whole one.

    Returns:
        The SavedModel's path.

    Raises:
        HarnessError: the export failed; the run's checkpoints, best.keras,
            history and any earlier export are as they were.
    """
    best = os.path.join(run_dir, rundir.BEST_MODEL_FILE)
    signature = tf.nest.map_structure(
        lambda array: tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype)),
        sample_input,
    )
    path = os.path.join(run_dir, SAVED_MODEL_DIR)
    temporary = tempfile.mkdtemp(
        prefix=f".{SAVED_MODEL_DIR}.", suffix=files.TEMPORARY_SUFFIX, dir=run_dir
    )
    try:
        # Anything can fail in there (tracing the user's layers, the disk): the run
        # is complete by now, and a traceback would hide what is safe on disk.
        try:
            if os.path.exists(best):
                model.load_weights(best)
            model.export(
                temporary, format="tf_saved_model", verbose=False, input_signature=[signature]
            )
            _replace(temporary, path)
        except Exception as error:  # noqa: BLE001 - reported as one line, see above
            message = " ".join(str(error).split())
            raise HarnessError(
                f"--export failed ({type(error).__name__}: {message[:300]}); the run is "
                f"intact in {run_dir} (checkpoints, {rundir.BEST_MODEL_FILE}, "
                f"{rundir.HISTORY_FILE}); export it later with --resume --export "
                f"--run_name={os.path.basename(run_dir)} and the same flags"
            ) from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _replace(new: str, path: str) -> None:
    """Renames the folder `new` to `path`, replacing a folder there."""
    if os.path.isdir(path):
        old = new + ".old"
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def how_to_load(path: str, sample_input) -> str:
    """The lines that tell a user how to serve the export, with its input format."""

    def describe(array) -> str:
        return f"{array.dtype} [batch, {', '.join(map(str, array.shape[1:]))}]"

    if isinstance(sample_input, dict):
        inputs = (
            "{"
            + ", ".join(f"{name!r}: {describe(array)}" for name, array in sample_input.items())
            + "}"
        )
    else:
        inputs = describe(sample_input)
    return (
        f"harness: SavedModel written to {path}\n"
        f"  load it with: tf.saved_model.load({path!r}).serve(inputs)  # inputs: {inputs}"
    )
