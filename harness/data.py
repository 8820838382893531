"""The built-in datasets and the array splits a run trains on.

Three sources, all returned as padded int32 token matrices (Keras's 'pre'
padding/truncation, like the tutorials):
- `synthetic`: generated in memory from the seed; Reuters-shaped and learnable.
- `reuters` / `imdb`: through the `keras.datasets` loaders, so a file's hash is
  verified before it is unpickled. `--data_dir` names a folder holding
  `reuters.npz` / `imdb.npz`; the loaders only look in the Keras cache, so the
  file is copied into a private temporary Keras home for the call. A file there
  that fails its hash check is reported, never replaced by a download (Keras's
  `get_file` would download it again). The words of the token ids come from
  `<dataset>_word_index.json` beside the data file or in the Keras cache (none:
  `Splits.words` is None); synthetic token ids get readable tags.

The arrays reach a loop through `harness.pipeline` (`Splits.stream`, `Splits.validation`).
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from harness.catalog import DATA_FILES, check_data_dir, data_file_hint
from harness.errors import HarnessError, UsageError
from harness.pipeline import Batches, TrainStream, num_examples, validation_dataset

# Default size and validation split of the synthetic data, like Reuters's 8982/2246.
SYNTHETIC_EXAMPLES = 8982
SYNTHETIC_VALIDATION_FRACTION = 0.2
# Token ids of Keras's reuters/imdb: the start mark, out-of-vocabulary, the first word.
START, OOV, FIRST_WORD = 1, 2, 3
_KEYWORDS_PER_CLASS = 4
_KEYWORD_SHARE = 0.2
_CHUNK_ROWS = 2048  # synthetic rows generated at a time
_LOADERS = {"reuters": keras.datasets.reuters, "imdb": keras.datasets.imdb}
CLASS_NAMES = {  # the 46 Reuters topics (Keras ships them), IMDB's two sentiments
    "reuters": tuple(keras.datasets.reuters.get_label_names()),
    "imdb": ("negative", "positive"),
}
# The sha256 each loader verifies (keras/src/datasets/reuters.py, imdb.py): checked
# first, so that Keras never replaces a --data_dir file by a download.
DATA_HASHES = {
    "reuters": "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916",
    "imdb": "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
}


class RunData(Protocol):
    """What a run reads its data from: `Splits` (arrays) or `user_datasets.DatasetSplits`."""

    num_classes: int | None  # None: regression
    vocabulary: tuple | None
    class_names: tuple | None  # None: "class <i>"
    words: tuple | None  # token id -> word, for token-id inputs (None: not text)

    @property
    def train_size(self) -> int: ...

    @property
    def val_size(self) -> int: ...

    @property
    def targets(self) -> int: ...

    def probe(self, size: int) -> tuple: ...

    def input_spec(self): ...

    def features(self): ...

    def stream(self, batch_size: int, seed: int) -> Batches: ...

    def validation(self, batch_size: int) -> tf.data.Dataset: ...

    def test(self, batch_size: int) -> tf.data.Dataset | None: ...


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train/validation arrays, the number of classes (None: regression targets),
    for text tokenized by the harness its vocabulary, and what the ids mean where
    known: the class names, and the word of each token id. `x_test`/`y_test`: a
    test split never used for choosing (None: the data has none apart from the
    validation split)."""

    x_train: Any  # an array, or a dict of arrays for a multi-input model
    y_train: Any
    x_val: Any
    y_val: Any
    num_classes: int | None
    vocabulary: tuple | None = None
    class_names: tuple | None = None
    words: tuple | None = None
    x_test: Any = None
    y_test: Any = None

    @property
    def train_size(self) -> int:
        """Training examples."""
        return num_examples(self.x_train)

    @property
    def val_size(self) -> int:
        """Validation examples."""
        return num_examples(self.x_val)

    def probe(self, size: int) -> tuple:
        """The first `size` training examples, as one fixed (x, y) batch."""
        return tf.nest.map_structure(lambda a: a[:size], (self.x_train, self.y_train))

    @property
    def targets(self) -> int:
        """The values a regression example has (1 for classification)."""
        return 1 if self.num_classes is not None else int(np.prod(self.y_train.shape[1:]))

    def input_spec(self):
        """The `tf.TensorSpec` of a batch of inputs (a dict of them for named inputs)."""
        return tf.nest.map_structure(
            lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), self.x_train
        )

    def features(self):
        """The training inputs, for a preprocessing layer's `adapt`."""
        return self.x_train

    def stream(self, batch_size: int, seed: int) -> "TrainStream":
        """The training batches (see `TrainStream`)."""
        return TrainStream(self.x_train, self.y_train, batch_size=batch_size, seed=seed)

    def validation(self, batch_size: int) -> tf.data.Dataset:
        """The validation batches in a fixed order."""
        return validation_dataset(self.x_val, self.y_val, batch_size=batch_size)

    def test(self, batch_size: int) -> tf.data.Dataset | None:
        """The test batches in a fixed order (None: no test split apart from validation)."""
        if self.x_test is None:
            return None
        return validation_dataset(self.x_test, self.y_test, batch_size=batch_size)


def load(
    dataset: str,
    *,
    num_words: int,
    max_len: int,
    seed: int,
    num_classes: int,
    num_examples: int | None,
    data_dir: str | None,
    validation_split: float | None = None,
) -> Splits:
    """Loads `dataset` and pads it to `max_len`.

    Without `validation_split` the validation split is the dataset's own held-out
    split (Keras's test split), as in the tutorials; with it, that fraction of the
    training split (seeded by `seed`) validates and the held-out split becomes the
    test split, never used for choosing.

    `num_examples`: for synthetic data, how many training examples to generate
    (default SYNTHETIC_EXAMPLES; the validation fraction is held out of them); for
    reuters/imdb, keep only the first this many of the training split left after
    the validation fraction is held out (the loaders shuffle it with `seed`, so
    they are a random subset, and the validation set does not change with it).

    Raises:
        UsageError: the data file is missing, corrupt or fails its hash check,
            or `num_examples` is more than the training split holds.
    """
    if dataset == "synthetic":
        return synthetic(
            num_examples=num_examples,
            num_words=num_words,
            max_len=max_len,
            num_classes=num_classes,
            seed=seed,
            validation_split=validation_split,
        )
    (x_train, y_train), (x_held, y_held) = _load_keras_dataset(
        dataset, data_dir, num_words=num_words, seed=seed
    )
    train = (_pad(x_train, max_len), y_train.astype(np.int32))
    held = (_pad(x_held, max_len), y_held.astype(np.int32))
    train, val, test = _three_splits(train, held, validation_split, seed)
    if num_examples and num_examples > len(train[1]):
        raise UsageError(
            f"--num_examples={num_examples} is not allowed: {dataset} has "
            f"{len(train[1])} training examples; use at most that, or leave "
            "it unset for all of them"
        )
    return Splits(
        *take(train, slice(None, num_examples)),
        *val,
        num_classes,
        class_names=CLASS_NAMES[dataset],
        words=keras_words(dataset, data_dir, num_words),
        x_test=test[0],
        y_test=test[1],
    )


def synthetic(
    *,
    num_examples: int | None,
    num_words: int,
    max_len: int,
    num_classes: int,
    seed: int,
    validation_split: float | None = None,
) -> Splits:
    """Reuters-shaped token sequences whose label is carried by keywords:
    `num_examples` (default SYNTHETIC_EXAMPLES) for training, 20% more held out
    (the validation split; the test split with `validation_split`, which then holds
    that fraction of the training examples out for validation, seeded).

    Each class owns a few keywords; a sequence is Zipf-distributed filler words
    with about 15% of its tokens drawn from its class's keywords, so a Conv1D
    model learns it within an epoch or two. Lengths vary like newswires and the
    sequences are pre-padded with 0 and start with the start mark 1. Rows are
    generated in chunks, so memory grows with the data, not with the temporaries.
    """
    num_examples = num_examples or SYNTHETIC_EXAMPLES
    rng = np.random.default_rng(seed)
    keywords = rng.choice(
        np.arange(FIRST_WORD, num_words),
        replace=False,
        size=(num_classes, min(_KEYWORDS_PER_CLASS, (num_words - FIRST_WORD) // num_classes)),
    )
    n_total = num_examples + max(1, int(num_examples * SYNTHETIC_VALIDATION_FRACTION))
    labels = rng.integers(0, num_classes, size=n_total).astype(np.int32)
    lengths = rng.integers(max(2, max_len // 4), max_len + 1, size=n_total)
    tokens = np.empty((n_total, max_len), dtype=np.int32)
    positions = np.arange(max_len)[None, :]
    for start in range(0, n_total, _CHUNK_ROWS):
        rows = slice(start, min(start + _CHUNK_ROWS, n_total))
        shape = (rows.stop - rows.start, max_len)
        filler = FIRST_WORD + (rng.zipf(1.3, size=shape) - 1) % (num_words - FIRST_WORD)
        keyword_pick = keywords[labels[rows, None], rng.integers(0, keywords.shape[1], shape)]
        chunk = np.where(rng.random(shape) < _KEYWORD_SHARE, keyword_pick, filler)
        first = max_len - lengths[rows, None]
        chunk = np.where(positions == first, START, chunk)
        tokens[rows] = np.where(positions < first, 0, chunk)
    train = (tokens[:num_examples], labels[:num_examples])
    held = (tokens[num_examples:], labels[num_examples:])
    train, val, test = _three_splits(train, held, validation_split, seed)
    return Splits(
        *train,
        *val,
        num_classes,
        words=_synthetic_words(keywords, num_words),
        x_test=test[0],
        y_test=test[1],
    )


def _three_splits(train: tuple, held: tuple, validation_split: float | None, seed: int):
    """(train, validation, test) pairs: the held-out split validates (test (None, None)),
    or, with `validation_split`, that fraction of `train` does and `held` is the test split."""
    if not validation_split:
        return train, held, (None, None)
    train, val = split_off(*train, validation_split, seed)
    return train, val, held


def split_off(x, y, fraction: float, seed: int) -> tuple:
    """((x, y) train, (x, y) validation): `fraction` of the examples held out, seeded
    by `seed`; both keep the examples' order. `x` may be a dict of arrays.

    Raises:
        UsageError: the fraction leaves no training examples.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    held = max(1, int(round(len(y) * fraction)))
    if held >= len(y):
        raise UsageError(f"--validation_split={fraction} leaves no training examples of {len(y)}")
    return take((x, y), np.sort(order[held:])), take((x, y), np.sort(order[:held]))


def take(pair: tuple, index) -> tuple:
    """The rows `index` (a slice or indices) of an (x, y) pair; `x` may be a dict of arrays."""
    x, y = pair
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}, y[index]
    return x[index], y[index]


def _synthetic_words(keywords: np.ndarray, num_words: int) -> tuple:
    """Readable tags for the synthetic token ids: `class<c>_kw<j>` for the class
    keywords (so they can be seen to cluster in the Projector), `w<i>` for fillers."""
    words = ["<pad>", "<start>", "<oov>", *(f"w{i}" for i in range(FIRST_WORD, num_words))]
    for label, row in enumerate(keywords):
        for j, token in enumerate(row):
            words[token] = f"class{label}_kw{j}"
    return tuple(words)


def keras_words(dataset: str, data_dir: str | None, num_words: int) -> tuple | None:
    """The word of each token id below `num_words` as Keras's reuters/imdb loaders
    number them (start_char=1, oov_char=2, index_from=3: id k + 3 is the word of rank
    k), from `<dataset>_word_index.json` in `data_dir` or the Keras cache; None when
    neither holds a readable one (`get_word_index` would download it: no internet
    here). Ids no word has (3) are `id_<i>`."""
    name = f"{dataset}_word_index.json"
    folders = [data_dir] if data_dir else []
    folders.append(os.path.join(keras.src.backend.config.keras_home(), "datasets"))
    for folder in folders:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(index, dict):
            continue
        words = ["<pad>", "<start>", "<oov>", *(f"id_{i}" for i in range(FIRST_WORD, num_words))]
        for word, rank in index.items():
            if isinstance(rank, int) and 0 <= rank < num_words - FIRST_WORD:
                words[rank + FIRST_WORD] = str(word)
        return tuple(words)
    return None


def _pad(sequences, max_len: int) -> np.ndarray:
    return keras.utils.pad_sequences(sequences, maxlen=max_len, dtype="int32")


def _load_keras_dataset(dataset: str, data_dir: str | None, *, num_words: int, seed: int):
    file_name = DATA_FILES[dataset]
    loader = _LOADERS[dataset]
    hint = data_file_hint(dataset)
    if data_dir is None:
        cache = os.path.join(keras.src.backend.config.keras_home(), "datasets")
        cached = os.path.join(cache, file_name)
        intact = os.path.isfile(cached) and _hash_holds(dataset, cached)
        try:
            return loader.load_data(path=file_name, num_words=num_words, seed=seed)
        except Exception as error:  # network errors come in many types
            cause = f"{type(error).__name__}: {_one_line(error)}"
            if intact:  # no download was needed: the cached copy passed its hash check
                raise HarnessError(
                    f"--dataset={dataset}: loading {file_name} from the "
                    f"Keras cache ({cache}) failed ({cause}); {hint}"
                ) from None
            where = (
                f"the copy in the Keras cache ({cache}) failed its hash check"
                if os.path.isfile(cached)
                else f"it is not in the Keras cache ({cache})"
            )
            raise UsageError(
                f"--dataset={dataset}: {file_name} had to be downloaded "
                f"({where}) and the download failed ({cause}); no internet? "
                f"{hint}"
            ) from None
    check_data_dir(dataset, data_dir)
    source = os.path.join(data_dir, file_name)
    if not _hash_holds(dataset, source):  # Keras would download the official file instead
        raise UsageError(
            f"{source} failed Keras's hash check (truncated or not the "
            f"official file); replace it: {hint}"
        )
    with _private_keras_home(source):
        try:
            return loader.load_data(path=file_name, num_words=num_words, seed=seed)
        except Exception as error:
            raise HarnessError(
                f"{source} passed its hash check but could not be read "
                f"({type(error).__name__}: {_one_line(error)})"
            ) from None


def _hash_holds(dataset: str, path: str) -> bool:
    """Whether `path` has the sha256 that Keras's loader verifies for `dataset`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == DATA_HASHES[dataset]


def _one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split())


@contextlib.contextmanager
def _private_keras_home(source: str) -> Iterator[str]:
    """Points the Keras dataset cache at a temporary folder holding a copy of `source`.

    Keras reads KERAS_HOME once at import and `load_data` takes no cache folder,
    so the cache root is swapped for the call. A copy (not a link) keeps the
    user's file safe from anything Keras writes into its cache. The copy has
    passed its hash check already, so Keras never downloads another file.
    """
    config = keras.src.backend.config
    saved = config._KERAS_DIR
    with tempfile.TemporaryDirectory(prefix="harness-keras-home-") as home:
        os.makedirs(os.path.join(home, "datasets"))
        shutil.copyfile(source, os.path.join(home, "datasets", os.path.basename(source)))
        config._KERAS_DIR = home
        try:
            yield home
        finally:
            config._KERAS_DIR = saved
