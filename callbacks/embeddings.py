"""Embedding layers for TensorBoard's Projector, the same way in every loop.

Every `freq` epochs `EmbeddingProjector` writes the weights of each
`keras.layers.Embedding` of the model (found recursively: Sequential, functional,
subclassed and nested models alike) into `<run_dir>/train/`, where the Projector
tab looks for them:

- `embeddings-<epoch>.index` / `.data-*`: an object-based TF checkpoint of the
  layers' own variables (nothing is traced; only a LoRA layer's table is copied),
  one entry per layer named after it, so its tensor is
  `<name>/.ATTRIBUTES/VARIABLE_VALUE`; only the newest is kept, and the
  `checkpoint` index file (the one the plugin reads) names it;
- `projector_config.pbtxt`: one embedding per layer, with its tensor name and
  its metadata file;
- `metadata.tsv`: the label of each row of the embedding matrix, one per line
  (no header): the word of the token id where it is known, `<pad>` for id 0,
  `id_<i>` otherwise (a vocabulary smaller than the table). That is for the
  first layer with a row for every word; a layer with another number of rows
  gets `metadata-<rows>.tsv`.

The file names depend only on the model and the epoch, so a resumed run (a new
process) writes into the same files. The metadata and the config are written
once per process, atomically; a failed write raises `files.WriteFailed`.
A model without an Embedding layer writes nothing.
"""

import errno
import glob
import os
import re
from collections.abc import Sequence

import keras
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins import projector

from . import files

FOLDER = "train"  # TensorBoard's train run: the Projector reads the checkpoint there
CHECKPOINT_NAME = "embeddings"
CHECKPOINT_INDEX = "checkpoint"  # what tf.train.latest_checkpoint reads
METADATA_FILE = "metadata.tsv"
TENSOR_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"  # an object-based checkpoint's variable key


class EmbeddingProjector(keras.callbacks.Callback):
    """Writes the model's embeddings for the Projector every `freq` epochs.

    Args:
        run_dir: the run directory; the files go to its `train/` folder.
        freq: write at the end of every epoch whose 1-based number is a multiple
            of this (0 = never).
        words: the word of each token id (index = id), or None: `id_<i>` labels.
    """

    def __init__(self, run_dir: str, freq: int, words: Sequence | None = None) -> None:
        super().__init__()
        self.folder = os.path.join(run_dir, FOLDER)
        self.freq = freq
        self.words = words
        self._checkpoint = None  # built at the first write: the model is built then
        self._copies = {}  # a layer whose embeddings are computed (LoRA): a variable copy

    def on_epoch_end(self, epoch, logs=None) -> None:
        if not self.freq or (epoch + 1) % self.freq:
            return
        if self._checkpoint is None:
            tables = embedding_layers(self.model)
            self._checkpoint = self._start(tables) if tables else False
        if self._checkpoint:
            self._save(epoch + 1)

    def _start(self, tables: dict) -> tf.train.Checkpoint:
        """The checkpoint of the layers' variables; writes the metadata and config."""
        with files.write_errors(self.folder):  # never made again with a deleted run
            if not os.path.isdir(self.folder):
                os.mkdir(self.folder)
        files.remove_temporaries(self.folder)  # left by a process killed mid-write
        variables, config = {}, projector.ProjectorConfig()
        # metadata.tsv: the rows of the first layer that has a row for every word.
        sizes = [int(layer.input_dim) for layer in tables.values()]
        known = len(self.words) if self.words else 0
        main_rows = next((rows for rows in sizes if rows >= known), sizes[0])
        written = set()
        for name, layer in tables.items():
            rows = int(layer.input_dim)
            metadata = METADATA_FILE if rows == main_rows else f"metadata-{rows}.tsv"
            if metadata not in written:
                files.write_text(
                    os.path.join(self.folder, metadata),
                    "".join(f"{label}\n" for label in row_labels(self.words, rows)),
                )
                written.add(metadata)
            embedding = config.embeddings.add()
            embedding.tensor_name = name + TENSOR_SUFFIX
            embedding.metadata_path = metadata
            variables[name] = self._variable(name, layer)
        files.write_text(
            os.path.join(self.folder, projector.metadata.PROJECTOR_FILENAME),
            text_format.MessageToString(config),
        )
        return tf.train.Checkpoint(**variables)

    def _variable(self, name: str, layer: keras.layers.Embedding):
        """The layer's embeddings variable, or a copy when its value is computed."""
        value = layer.embeddings
        if isinstance(value, keras.Variable | tf.Variable):
            return value
        with tf.init_scope():
            self._copies[name] = (layer, tf.Variable(value, trainable=False, name=name))
        return self._copies[name][1]

    def _save(self, epoch: int) -> None:
        """Writes `embeddings-<epoch>`, points the index at it, removes older ones."""
        for layer, copy in self._copies.values():
            copy.assign(layer.embeddings)
        name = f"{CHECKPOINT_NAME}-{epoch}"
        prefix = os.path.join(self.folder, name)
        try:
            with files.write_errors(prefix):
                if not os.path.isdir(self.folder):  # TensorFlow would make it (and the run) again
                    raise FileNotFoundError(errno.ENOENT, "the folder was deleted", self.folder)
                self._checkpoint.write(prefix)
        except files.WriteFailed:
            files.remove(glob.glob(glob.escape(prefix) + "[._]*"))  # its files, TensorFlow's _temp
            raise
        files.write_text(
            os.path.join(self.folder, CHECKPOINT_INDEX),
            f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n',
        )
        older = glob.glob(os.path.join(glob.escape(self.folder), f"{CHECKPOINT_NAME}-*"))
        files.remove(path for path in older if not os.path.basename(path).startswith(f"{name}."))


def embedding_layers(model: keras.Model) -> dict:
    """{checkpoint name: layer} of every Embedding layer in `model`, nested ones too, in
    the order Keras tracks them; names are the layers' names made file-safe, with the
    layer's path (or a number) telling apart layers that share a name."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.Embedding)
    ]
    names = {}
    for layer in layers:
        name = _safe(layer.name)
        if name in names or name == "save_counter":
            name = _safe(getattr(layer, "path", layer.name))
        base, number = name, 2
        while name in names:
            name, number = f"{base}_{number}", number + 1
        names[name] = layer
    return names


def row_labels(words: Sequence | None, rows: int) -> list:
    """The Projector label of each of `rows` token ids: its word where `words` knows
    it, `<pad>` for id 0, `id_<i>` otherwise; tabs and line breaks become spaces."""
    labels = []
    for i in range(rows):
        word = words[i] if words is not None and i < len(words) else None
        word = " ".join(str(word).split()) if word is not None else ""
        labels.append(word or ("<pad>" if i == 0 else f"id_{i}"))
    return labels


def _safe(name: str) -> str:
    """`name` with only letters, digits, '_' and '-' (no escaping in checkpoint keys)."""
    return re.sub(r"[^\w-]", "_", name) or "embedding"
