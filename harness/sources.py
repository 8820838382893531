"""The data users bring: an .npz file, a folder of class subfolders, a function.

Every source ends as `data.Splits` of in-memory arrays, so that each loop reads
the same seeded stream of batches (`pipeline.TrainStream`) and a resumed run sees the
same batch at each global step:
- `<file>.npz`: arrays `x_train, y_train` and `x_val, y_val` (or `x_test, y_test`),
  read with `allow_pickle=False`; `x_train/<name>` keys make named inputs; a file
  of `x, y` alone (as Keras's boston_housing.npz) is split with --validation_split.
- `<folder>`: `<folder>/train/<class>/…` and `<folder>/validation/<class>/…`, or
  `<folder>/<class>/…` with --validation_split, read with Keras's folder loaders:
  images resized to --image_size and scaled to [0, 1]; text files tokenized once by a
  `TextVectorization` adapted to the training split (`--num_words`, `--max_len`),
  whose vocabulary the run directory keeps (a resumed run reuses it).
- `package.module:function`: called with no arguments (or `seed=`), returning the
  arrays as a dict like the .npz, or `((x_train, y_train), (x_val, y_val))`, or a
  pair of `tf.data.Dataset`s of unbatched (x, y) examples, which become
  `user_datasets.DatasetSplits` (streamed, not held in memory).

A test split (`x_test, y_test`; a `test/` folder beside `train/`) is kept apart for
`RunData.test` when there is a validation split too (`x_val`, `validation/`, or
--validation_split); otherwise it validates, as before.

Labels choose the task (`task.for_labels`): integer classes or float targets.
"""

import os
from collections.abc import Mapping

import keras
import numpy as np

from harness import catalog, data, pipeline, task, user_code, user_datasets
from harness.callbacks import files
from harness.config import Config
from harness.errors import UsageError

VOCABULARY_FILE = "vocabulary.txt"
IMAGE_SIZE = (64, 64)
SPLITS = (("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))
ARRAYS_HELP = (
    "arrays x_train, y_train and x_val, y_val (or x_test, y_test; named inputs as x_train/<name>)"
)
FUNCTION_HELP = (
    "give ((x_train, y_train), (x_val, y_val)), a dict of x_train, y_train, x_val, y_val "
    "arrays, or (train, validation) tf.data.Datasets of unbatched (x, y) examples"
)


def load(config: Config, run_dir: str | None = None) -> data.RunData:
    """The run's data as `config.dataset` names it; `run_dir`: the run being resumed
    (its saved vocabulary is reused).

    Raises:
        UsageError: the data is missing, malformed or fits no task.
        UserCodeError: a --dataset function raised (exit status 2).
    """
    kind = catalog.dataset_kind(config.dataset)
    if kind == catalog.BUILTIN:
        return data.load(
            config.dataset,
            num_words=config.num_words,
            max_len=config.max_len,
            seed=config.seed,
            num_classes=config.classes,
            num_examples=config.num_examples,
            data_dir=config.data_dir,
            validation_split=config.validation_split,
        )
    if kind == catalog.GIVEN:
        raise UsageError(
            f"--dataset={config.dataset} names data given to harness.train(data=...); "
            "give the data again"
        )
    if kind == catalog.FUNCTION:
        return from_value(
            config, _called(config.dataset, config.seed), f"--dataset={config.dataset!r}"
        )
    if kind == catalog.NPZ:
        arrays = _npz(config.dataset)
    elif kind == catalog.IMAGE_FOLDER:
        arrays = _image_folder(config.dataset, config.image_size or IMAGE_SIZE)
    else:
        arrays = _text_folder(config, run_dir)
    return from_arrays(config, arrays)


def from_value(config: Config, value, where: str) -> data.RunData:
    """The run data of what a data function returned (or the Python API was given):
    a pair of datasets, ((x_train, y_train), (x_val, y_val)) or a dict of arrays."""
    if user_datasets.is_pair(value):
        if config.validation_split:
            raise UsageError(
                f"{where} gives validation data of its own; drop --validation_split "
                "(to hold some out, split the datasets with .take() and .skip())"
            )
        return user_datasets.DatasetSplits(where, *value, config.task, config.num_examples)
    if isinstance(value, Mapping) or hasattr(value, "files"):  # a dict or an NpzFile
        keys = value.files if hasattr(value, "files") else list(value)
        arrays = _gathered(where, {k: value[k] for k in keys}, FUNCTION_HELP)
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in value)
    ):
        (x_train, y_train), (x_val, y_val) = value
        arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    else:
        raise UsageError(f"{where} gave {_describe(value)}; {FUNCTION_HELP}")
    return from_arrays(config, arrays, where)


def from_arrays(config: Config, arrays: Mapping, where: str | None = None) -> data.Splits:
    """`Splits` of a dict of x_train, y_train (and x_val, y_val; x_test, y_test) arrays,
    checked, split with --validation_split, cut to --num_examples; the task from the
    labels. A test split without a validation split validates, unless
    --validation_split holds the validation examples out of the training ones."""
    where = where or f"--dataset={config.dataset}"
    x_train, y_train = _checked(where, "train", arrays["x_train"], arrays["y_train"])
    val, test = _given(where, arrays, "val", x_train), _given(where, arrays, "test", x_train)
    if val and config.validation_split:
        raise UsageError(f"{where} has validation data of its own; drop --validation_split")
    if config.validation_split:
        (x_train, y_train), val = data.split_off(
            x_train, y_train, config.validation_split, config.seed
        )
    elif not val and test:
        val, test = test, None
    elif not val:
        raise UsageError(
            f"{where} has no validation data: give {ARRAYS_HELP}, or pass "
            "--validation_split=0.2 to hold out a fifth of the training data"
        )
    if config.num_examples:
        if config.num_examples > pipeline.num_examples(x_train):
            raise UsageError(
                f"--num_examples={config.num_examples} is not allowed: {where} has "
                f"{pipeline.num_examples(x_train)} training examples; use at most that"
            )
        x_train, y_train = data.take((x_train, y_train), slice(None, config.num_examples))
    (x_val, y_val), (x_test, y_test) = val, test or (None, None)
    try:
        fitting = task.for_labels(y_train, y_val, config.task)
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from None
    y_train, y_val, y_test = (_as_labels(y, fitting.num_classes) for y in (y_train, y_val, y_test))
    for name, x in (("x_train", x_train), ("x_val", x_val), ("x_test", x_test)):
        if x is not None:
            _check_token_ids(where, name, x, config.num_words)
    return data.Splits(
        x_train,
        y_train,
        x_val,
        y_val,
        fitting.num_classes,
        vocabulary=arrays.get("vocabulary"),
        class_names=arrays.get("class_names"),
        words=_words(arrays.get("vocabulary")),
        x_test=x_test,
        y_test=y_test,
    )


def _given(where: str, arrays: Mapping, split: str, x_train) -> tuple | None:
    """The checked (x, y) of split 'val' or 'test' (None: not given)."""
    if arrays.get(f"x_{split}") is None:
        return None
    x, y = _checked(where, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    _check_same_inputs(where, x_train, x, f"x_{split}")
    return x, y


def _as_labels(y, num_classes: int | None):
    """Labels as the task reads them: float32 [n, targets] or int32 [n] (None stays None)."""
    if y is None:
        return None
    if num_classes is task.REGRESSION:
        return y.astype(np.float32).reshape(len(y), -1)
    return y.astype(np.int32).reshape(len(y))


def save_vocabulary(splits: data.RunData, run_dir: str) -> None:
    """Keeps a text folder's vocabulary in the run directory (one token per line)."""
    if splits.vocabulary:
        files.write_text(os.path.join(run_dir, VOCABULARY_FILE), "\n".join(splits.vocabulary))


def _words(vocabulary: tuple | None) -> tuple | None:
    """The word of each token id of a `TextVectorization` vocabulary (id 0, '': `<pad>`;
    id 1 is '[UNK]')."""
    if not vocabulary:
        return None
    return ("<pad>" if vocabulary[0] == "" else vocabulary[0], *vocabulary[1:])


def _npz(path: str) -> dict:
    """The arrays of an .npz file, named inputs gathered into dicts."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except ValueError as error:  # object arrays need pickle, which is refused
        raise UsageError(
            f"--dataset={path!r}: {user_code.one_line(error)} (object arrays are not "
            "read: store numbers)"
        ) from None
    except Exception as error:  # a damaged or foreign file: zipfile, OSError, ...
        raise UsageError(
            f"--dataset={path!r} is not a readable .npz file ({type(error).__name__}: "
            f"{user_code.one_line(error)})"
        ) from None
    return _gathered(f"--dataset={path!r}", arrays, ARRAYS_HELP)


def _gathered(where: str, arrays: Mapping, needed: str) -> dict:
    """x_train, y_train, x_val, y_val, x_test, y_test from the arrays (None: not given;
    'x_train/<name>' keys become a dict of named inputs)."""

    def named(prefix: str):
        if prefix in arrays:
            return np.asarray(arrays[prefix])
        inputs = {
            k.split("/", 1)[1]: np.asarray(v)
            for k, v in arrays.items()
            if k.startswith(prefix + "/")
        }
        return inputs or None

    found = {name: named(name) for pair in SPLITS for name in pair}
    if found["x_train"] is None and found["y_train"] is None:  # one set: keras's x, y
        found["x_train"], found["y_train"] = named("x"), named("y")
    missing = [name for name in ("x_train", "y_train") if found[name] is None]
    if missing:
        held = ", ".join(sorted(arrays)) or "nothing"
        raise UsageError(f"{where} has no {' or '.join(missing)} (it holds {held}); give {needed}")
    for x_name, y_name in SPLITS[1:]:
        if (found[x_name] is None) != (found[y_name] is None):
            given, absent = (x_name, y_name) if found[y_name] is None else (y_name, x_name)
            raise UsageError(f"{where} has {given} but no {absent}; give both or neither")
    return found


def _called(path: str, seed: int):
    """What a user's data function returns (called with `seed=` if it takes one)."""
    function = user_code.import_function("dataset", path, "a data function")
    params = user_code.parameters(function) or []
    args = (seed,) if "seed" in params else ()
    call = (lambda s: function(seed=s)) if args else function
    return user_code.call(f"--dataset={path!r}", call, args, what="a data function", exit_code=2)


def _describe(value) -> str:
    if isinstance(value, tuple | list):
        kinds = ", ".join(type(v).__name__ for v in value[:4])
        return f"a {type(value).__name__} of {len(value)} ({kinds})"
    return f"a {type(value).__name__}"


def _folders(root: str) -> dict:
    """The folder of each split given: "train" (always), "val" and "test" where
    `<root>/train` has a `validation/` or `test/` folder beside it."""
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        return {"train": root}
    named = {
        "train": train,
        "val": os.path.join(root, "validation"),
        "test": os.path.join(root, "test"),
    }
    return {split: folder for split, folder in named.items() if os.path.isdir(folder)}


def _read_folder(loader, root: str, what: str, **options) -> tuple[dict, list]:
    """({split: (examples, labels)}, class names) of one folder, in Keras's sorted order."""
    folders = _folders(root)
    classes = catalog.class_folders(folders["train"])
    splits = {}
    for split, folder in folders.items():
        try:
            dataset = loader(
                folder,
                labels="inferred",
                label_mode="int",
                class_names=classes,
                batch_size=None,
                shuffle=False,
                verbose=False,
                **options,
            )
        except ValueError as error:  # Keras's words: no files, other class folders
            raise UsageError(f"--dataset={root!r}: {folder}: {user_code.one_line(error)}") from None
        examples, labels = [], []
        for example, label in dataset.as_numpy_iterator():
            examples.append(example)
            labels.append(label)
        if not examples:
            raise UsageError(f"--dataset={root!r}: {folder} holds no readable {what}")
        splits[split] = (examples, np.asarray(labels, np.int32))
    return splits, classes


def _image_folder(root: str, image_size: tuple) -> dict:
    """The images as float32 [n, height, width, 3] in [0, 1]."""
    splits, classes = _read_folder(
        keras.utils.image_dataset_from_directory, root, "images", image_size=image_size
    )
    arrays = {
        split: (np.stack(x).astype(np.float32) / 255.0, y) for split, (x, y) in splits.items()
    }
    return {**_named_splits(arrays), "class_names": tuple(classes)}


def _text_folder(config: Config, run_dir: str | None) -> dict:
    """The texts as int32 token ids [n, --max_len] (0 pads the end), tokenized once."""
    splits, classes = _read_folder(
        keras.utils.text_dataset_from_directory, config.dataset, ".txt files"
    )
    saved = run_dir and os.path.join(run_dir, VOCABULARY_FILE)
    vocabulary = None
    if saved and os.path.exists(saved):
        with open(saved, encoding="utf-8") as f:
            vocabulary = f.read().split("\n")
    vectorize = keras.layers.TextVectorization(
        max_tokens=config.num_words,
        output_sequence_length=config.max_len,
        vocabulary=vocabulary,
    )
    if vocabulary is None:
        vectorize.adapt(np.asarray(splits["train"][0], dtype=object), batch_size=256)
    arrays = {
        split: (np.asarray(vectorize(np.asarray(x, dtype=object)), dtype=np.int32), y)
        for split, (x, y) in splits.items()
    }
    return {
        **_named_splits(arrays),
        "vocabulary": tuple(vectorize.get_vocabulary()),
        "class_names": tuple(classes),
    }


def _named_splits(arrays: dict) -> dict:
    """{"x_train": ..., "y_train": ..., "x_val": ...} of {split: (x, y)}."""
    return {
        f"{axis}_{split}": value
        for split, pair in arrays.items()
        for axis, value in zip("xy", pair)
    }


def _checked(where: str, split: str, x, y) -> tuple:
    """x (an array or a dict of arrays) and y as numeric arrays of one length."""
    names = {"x": f"x_{split}", "y": f"y_{split}"}
    x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, Mapping) else np.asarray(x)
    y = np.asarray(y)
    for name, array in [*_flat(names["x"], x), (names["y"], y)]:
        if array.ndim == 0:
            raise UsageError(f"{where}: {name} is a single value, not one row per example")
        if array.dtype.kind not in "biuf" and name == names["y"]:
            raise UsageError(
                f"{where}: {name} holds {array.dtype} values, labels that fit no task: "
                "give integer class ids 0..N-1, or floats for regression"
            )
        if array.dtype.kind not in "biuf":
            raise UsageError(
                f"{where}: {name} holds {array.dtype} values; give numbers (for text: "
                "token ids, or a folder of .txt files)"
            )
    lengths = {name: len(array) for name, array in [*_flat(names["x"], x), (names["y"], y)]}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise UsageError(
            f"{where}: the {split} arrays differ in length ({shown}); "
            "give one row per example in each"
        )
    if not lengths[names["y"]]:
        raise UsageError(f"{where}: the {split} arrays are empty")
    x = {k: _as_input(v) for k, v in x.items()} if isinstance(x, dict) else _as_input(x)
    return x, y


def _flat(name: str, x) -> list:
    if isinstance(x, dict):
        return [(f"{name}/{k}", v) for k, v in x.items()]
    return [(name, x)]


def _as_input(array: np.ndarray) -> np.ndarray:
    """int32 token ids, float32 otherwise (what the model's inputs take)."""
    return array.astype(np.int32 if array.dtype.kind in "iu" else np.float32)


def _check_same_inputs(where: str, x_train, x, name: str) -> None:
    train = {key: a.shape[1:] for key, a in _flat("x", x_train)}
    other = {key: a.shape[1:] for key, a in _flat("x", x)}
    if train.keys() != other.keys() or any(train[k] != other[k] for k in train):
        raise UsageError(
            f"{where}: the x_train and {name} inputs differ in shape ({train} vs {other})"
        )


def _check_token_ids(where: str, name: str, x, num_words: int) -> None:
    """Token ids (integer inputs of rank 1 per example) must index the embedding."""
    for input_name, array in _flat(name, x):
        if array.dtype.kind in "iu" and array.ndim == 2 and array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= num_words:
                raise UsageError(
                    f"{where}: {input_name} holds token ids {low}..{high}; they must be "
                    f"0..--num_words-1: pass --num_words={high + 1} or more"
                )
