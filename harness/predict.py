"""Predict with a saved run's checkpoint: its top classes, or its regression values.

usage: python -m harness.predict --run_name=X --input=FILE [--checkpoint=best|latest|ckpt-N]
                                 [--top_k=3] [--json] [--logdir=logs]

--input is one of:
  a .txt file: one raw text per line, for text runs; tokenized as the run's training
    data was (reuters/imdb: Keras's word index; a text folder: the run's vocabulary)
  images (.png .jpg .jpeg .bmp .gif), for image-folder runs: --input repeated, or a
    folder (its images, subfolders included); resized and scaled as the folder loader
    did at training
  an .npz: the array `x` (or its only array, or `x_test`), one row per example
Prints each input's top --top_k classes with their probabilities (--json: one JSON
document). Writes nothing. The run's data is loaded to rebuild its model.
"""

import json
import os
import re
import sys
from collections.abc import Callable

import numpy as np
from absl import flags

from harness import catalog, saved_run
from harness.errors import UsageError

_WORD = re.compile(r"[a-z0-9']+")  # how Keras's reuters/imdb word indexes spell words
_SHOWN_CHARS = 60


def define_flags(flag_values: flags.FlagValues) -> None:
    """predict's own flags (the run and checkpoint flags are saved_run's)."""
    flags.DEFINE_multi_string(
        "input",
        None,
        ".txt (text runs), images or a folder of them (image runs; repeat --input), or .npz",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "top_k", 3, "Classes shown per input", lower_bound=1, flag_values=flag_values
    )
    flags.DEFINE_bool("json", False, "Print one JSON document", flag_values=flag_values)


def read_input(paths: list | None) -> tuple:
    """(kind, content) of the --input files, read without TensorFlow: ('text', lines),
    ('image', paths) or ('array', array).

    Raises:
        UsageError: a missing, unreadable, empty or unsupported file; several files
            that are not all images.
    """
    if not paths:
        raise UsageError("--input is required: a .txt, image or .npz file to predict on")
    files = [file for path in paths for file in _files(path)]
    if len(files) == 1:
        return _read_file(files[0])
    for path in files:
        if _read_file(path)[0] != "image":
            raise UsageError(
                f"--input={path!r}: several inputs must all be images; give one .txt or .npz"
            )
    return "image", files


def _files(path: str) -> list:
    """`path`, or the image files in the folder `path` (sorted, subfolders included)."""
    if not os.path.isdir(path):
        return [path]
    found = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(path)
        for name in names
        if os.path.splitext(name)[1].lower() in catalog.IMAGE_SUFFIXES
    )
    if not found:
        raise UsageError(
            f"--input={path!r} is a folder without images ({' '.join(catalog.IMAGE_SUFFIXES)})"
        )
    return found


def _read_file(path: str) -> tuple:
    suffix = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as error:
        raise UsageError(f"--input={path!r} cannot be read ({error.strerror})") from None
    if not content:
        raise UsageError(f"--input={path!r} is empty")
    if suffix in catalog.TEXT_SUFFIXES:
        return "text", _lines(path, content)
    if suffix in catalog.IMAGE_SUFFIXES:
        return "image", [path]
    if suffix == ".npz":
        return "array", _npz_array(path)
    raise UsageError(
        f"--input={path!r}: {suffix or 'a file without suffix'} is not read; give a .txt, "
        f"an image ({' '.join(catalog.IMAGE_SUFFIXES)}) or an .npz"
    )


def _lines(path: str, content: bytes) -> list:
    """The non-blank lines of a UTF-8 text file."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--input={path!r} is not UTF-8 text ({error.reason})") from None
    if "\0" in text:
        raise UsageError(f"--input={path!r} is not text (it holds NUL bytes)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"--input={path!r} holds no text (only blank lines)")
    return lines


def _npz_array(path: str) -> np.ndarray:
    """The array `x`, the only array, or `x_test` of an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception as error:  # a damaged or foreign file: zipfile, OSError, ValueError, ...
        raise UsageError(
            f"--input={path!r} is not a readable .npz file ({type(error).__name__})"
        ) from None
    for name in ("x", *(arrays if len(arrays) == 1 else ()), "x_test"):
        if name in arrays:
            return arrays[name]
    held = ", ".join(sorted(arrays)) or "no arrays"
    raise UsageError(f"--input={path!r} holds {held}; give the inputs as an array named x")


def model_inputs(run: saved_run.SavedRun, kind: str, content) -> tuple[list, np.ndarray]:
    """(a name for each input, the batch of model inputs) of what `read_input` read.

    Raises:
        UsageError: the input does not fit the run's model (text for an image run, shapes).
    """
    spec = run.splits.input_spec()
    if isinstance(spec, dict):
        raise UsageError(
            f"predict feeds one input; the model of {run.located.run_dir} takes {len(spec)} "
            f"({', '.join(spec)})"
        )
    if kind == "text":
        return content, _tokenized(run, content, spec)
    if kind == "image":
        return content, np.concatenate([_image(run, path, spec) for path in content])
    if tuple(content.shape[1:]) != tuple(spec.shape[1:]) or content.dtype.kind not in "biuf":
        raise UsageError(
            f"--input: the array is {content.dtype} of shape {content.shape}; the model takes "
            f"{spec.dtype.name} rows of shape {tuple(spec.shape[1:])}"
        )
    return [f"row {i}" for i in range(len(content))], content.astype(spec.dtype.as_numpy_dtype)


def _tokenized(run: saved_run.SavedRun, lines: list, spec) -> np.ndarray:
    """Token ids as the run's data has them: its vocabulary's (text folders) or Keras's
    word index's (start mark, OOV for unknown and rarer words, pre-padded to --max_len)."""
    import keras

    from harness.data import FIRST_WORD, OOV, START

    config = run.config
    if run.splits.vocabulary:
        vectorize = keras.layers.TextVectorization(
            max_tokens=config.num_words,
            output_sequence_length=config.max_len,
            vocabulary=list(run.splits.vocabulary),
        )
        return np.asarray(vectorize(np.asarray(lines, dtype=object)), dtype=np.int32)
    if not run.splits.words or spec.shape.rank != 2 or not spec.dtype.is_integer:
        raise UsageError(
            f"--input is text, but run {run.located.run_dir} does not train on text "
            f"(--dataset={config.dataset}): give an .npz of its inputs"
        )
    ids = {word: i for i, word in enumerate(run.splits.words) if i >= FIRST_WORD}
    sequences = [[START, *(ids.get(w, OOV) for w in _WORD.findall(line.lower()))] for line in lines]
    return keras.utils.pad_sequences(sequences, maxlen=config.max_len, dtype="int32")


def _image(run: saved_run.SavedRun, path: str, spec) -> np.ndarray:
    """The image as the folder loader read it: RGB, bilinear-resized, scaled to [0, 1]."""
    import tensorflow as tf

    if catalog.dataset_kind(run.config.dataset) != catalog.IMAGE_FOLDER:
        raise UsageError(
            f"--input={path!r} is an image, but run {run.located.run_dir} does not train on "
            f"images (--dataset={run.config.dataset})"
        )
    try:
        image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError:
        raise UsageError(
            f"--input={path!r} is no image TensorFlow can decode (PNG, JPEG, GIF or BMP)"
        ) from None
    resized = tf.image.resize(image, spec.shape[1:3], method="bilinear")
    return (resized.numpy() / 255.0)[None].astype(np.float32)


def predict(run: saved_run.SavedRun, names: list, x: np.ndarray, top_k: int) -> list:
    """Per input: {input, top_k: [{class, name, probability}]}, or {input, value} (regression)."""
    outputs = np.asarray(run.model.predict(x, verbose=0), dtype=np.float64)
    num_classes = run.splits.num_classes
    results = []
    for name, output in zip(names, outputs):
        if num_classes is None:
            results.append({"input": name, "value": output.tolist()})
            continue
        probabilities = np.array([1 - output[0], output[0]]) if num_classes == 2 else output
        best = np.argsort(-probabilities, kind="stable")[:top_k]
        results.append(
            {
                "input": name,
                "top_k": [
                    {
                        "class": int(c),
                        "name": _class_name(run, int(c)),
                        "probability": float(probabilities[c]),
                    }
                    for c in best
                ],
            }
        )
    return results


def _class_name(run: saved_run.SavedRun, index: int) -> str:
    names = run.splits.class_names
    return str(names[index]) if names else f"class {index}"


def lines(results: list) -> str:
    """The results for people: each input, then its classes or values."""
    out = []
    for result in results:
        shown = result["input"]
        out.append(shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "...")
        if "value" in result:
            out.append("  value " + " ".join(f"{v:.6g}" for v in result["value"]))
        for top in result.get("top_k", ()):
            out.append(f"  {top['probability']:.4f}  {top['class']:>3}  {top['name']}")
    return "\n".join(out)


def main(flag_values: flags.FlagValues, print_fn: Callable[[str], None] = print) -> int:
    located = saved_run.locate(flag_values.logdir, flag_values.run_name, flag_values.checkpoint)
    kind, content = read_input(flag_values.input)
    saved_run.quiet_tensorflow()
    run = saved_run.open_run(located, print_fn=_stderr)
    names, x = model_inputs(run, kind, content)
    results = predict(run, names, x, flag_values.top_k)
    print_fn(json.dumps(results, indent=2) if flag_values.json else lines(results))
    return 0


def _stderr(line: str) -> None:
    """Warnings while reopening the run (e.g. a damaged checkpoint skipped): not stdout,
    which --json keeps for the document."""
    print(line, file=sys.stderr)


if __name__ == "__main__":
    saved_run.cli(main, define_flags, __doc__)
