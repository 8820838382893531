"""What a run writes once, at step 0: into its own directory the HParams tab's
experiment and session, the flags and the model's summary; with the op graph, the
model's Keras (conceptual) graph.

The experiment config (`hparams_config`) names every hyperparameter and the
metrics to compare, in order: without it TensorBoard guesses its metrics from
every scalar, batch learning rate and seconds included.
"""

import os

import keras
import tensorflow as tf
from keras.src.models.functional import Functional  # what keras.Model(inputs, outputs) makes
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.graph import metadata as graph_metadata
from tensorboard.plugins.hparams import api as hparams_api

TRAIN, VALIDATION = "train", "validation"
# A run in a folder holding this file is a trial of `harness.sweep`, which writes the
# experiment config (the swept domains) at the folder's root: TensorBoard's HParams
# tab shows one experiment config, picked from any run that has one.
SWEEP_FILE = "sweep.json"
KERAS_GRAPH_TAG = "keras"  # the tag Keras 2's TensorBoard callback gave the model's config


def write(
    run_dir: str,
    model: keras.Model,
    *,
    hparams: dict,
    domains: dict,
    metrics: list,
    flags: dict,
) -> None:
    """Writes the run's hyperparameters, experiment config (a sweep's trial leaves
    that to the sweep), flags and the model's summary to the default writer (the
    run directory's).

    Args:
        run_dir: the run directory (its name is the HParams trial id).
        model: the built model.
        hparams: hyperparameter name -> this run's value (str, int, float, bool).
        domains: hyperparameter name -> the values it may take (a tuple), for the
            ones that have a fixed set; the others have no domain.
        metrics: log keys (as in `history.json`: 'loss', 'val_accuracy') in the
            order the HParams table shows them.
        flags: every option of the run, as a text table.
    """
    if not os.path.exists(os.path.join(os.path.dirname(run_dir), SWEEP_FILE)):
        _experiment_config(hparams, domains, metrics)
    hparams_api.hparams(hparams, trial_id=os.path.basename(run_dir))
    rows = "\n".join(f"| {name} | {value!r} |" for name, value in flags.items())
    tf.summary.text("flags", f"| flag | value |\n|---|---|\n{rows}")
    tf.summary.text("model_summary", _summary_text(model))


def _experiment_config(hparams: dict, domains: dict, metrics: list) -> None:
    hparams_api.hparams_config(
        hparams=[
            hparams_api.HParam(name, hparams_api.Discrete(list(domains[name])))
            if name in domains
            else hparams_api.HParam(name)
            for name in hparams
        ],
        metrics=[metric(key) for key in metrics],
    )


def write_keras_graph(model: keras.Model) -> None:
    """Writes the model's conceptual graph to the default writer (the `train` run's:
    TensorBoard's Graphs tab opens on a run's op graph, and a run holding only a
    conceptual graph shows an error there)."""
    config = keras_graph(model)
    if config is not None:
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = graph_metadata.PLUGIN_NAME_KERAS_MODEL
        metadata.plugin_data.content = b"1"
        tf.summary.write(KERAS_GRAPH_TAG, tf.constant(config), metadata=metadata)


def metric_order(log_keys: list) -> list:
    """The history keys to compare, validation loss and the task's main metric (the
    first after the loss) first, then the training ones, then the rest."""
    loss, *others = log_keys
    first = [loss, *others[:1]]
    return [
        *(f"val_{key}" for key in first),
        *first,
        *(f"val_{key}" for key in others[1:]),
        *others[1:],
    ]


def keras_graph(model: keras.Model) -> str | None:
    """The model's JSON config, which the Graphs tab draws as its conceptual graph;
    None for a subclassed model (its layers are not connected in a graph)."""
    if type(model) not in (keras.Sequential, Functional):  # subclasses may call anything
        return None
    try:
        return model.to_json()
    except (NotImplementedError, TypeError, ValueError):  # a layer without get_config
        return None


def metric(key: str) -> hparams_api.Metric:
    """The HParams metric of log key `key` ('val_loss': the validation run's epoch_loss)."""
    group, name = (VALIDATION, key[4:]) if key.startswith("val_") else (TRAIN, key)
    return hparams_api.Metric(f"epoch_{name}", group=group, display_name=f"{group} {name}")


def _summary_text(model: keras.Model) -> str:
    """`model.summary()` as preformatted Markdown (indented four spaces)."""
    lines = []
    model.summary(print_fn=lambda text, line_break=None: lines.append(text))
    return "\n".join("    " + line for line in "\n".join(lines).splitlines())
