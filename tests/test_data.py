"""Data: the synthetic set, the tf.data pipeline, and the real Reuters file.

The pipeline tests pull real batches out of `TrainStream`; the Reuters tests
use the Keras-identical reuters.npz from the shared data folder (they skip if
it is absent), a truncated copy of it, and folders that lack it.
"""

import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import data, pipeline
from harness.errors import UsageError

# --- Synthetic data ------------------------------------------------------------------------


def _synthetic(**overrides) -> data.Splits:
    values = dict(num_examples=500, num_words=1000, max_len=80, num_classes=46, seed=3)
    return data.synthetic(**{**values, **overrides})


def _assert_pre_padded(x: np.ndarray) -> None:
    """Each row: zeros, then the start mark 1 (if it fits), then no more zeros."""
    for row in x:
        nonzero = np.flatnonzero(row)
        assert nonzero.size and np.all(row[nonzero[0] :] != 0), row


def test_synthetic_is_reuters_shaped():
    splits = _synthetic()
    assert splits.x_train.shape == (500, 80) and splits.x_val.shape == (100, 80)
    assert splits.y_train.shape == (500,) and splits.y_val.shape == (100,)
    assert splits.x_train.dtype == np.int32 and splits.y_train.dtype == np.int32
    assert splits.num_classes == 46
    for x in (splits.x_train, splits.x_val):
        assert x.min() == 0 and x.max() < 1000
        _assert_pre_padded(x)
        starts = x[np.arange(len(x)), (x != 0).argmax(axis=1)]
        assert np.all(starts == 1)  # every sequence begins with the start mark
    labels = np.concatenate([splits.y_train, splits.y_val])
    assert labels.min() >= 0 and labels.max() < 46 and len(np.unique(labels)) > 30


def test_synthetic_depends_only_on_the_seed():
    a, b, c = _synthetic(), _synthetic(), _synthetic(seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_binary_task():
    splits = _synthetic(num_classes=2)
    assert splits.num_classes == 2
    assert set(np.unique(splits.y_train)) == {0, 1}
    assert set(np.unique(splits.y_val)) <= {0, 1}


# --- The training stream -----------------------------------------------------------------

X = np.arange(50 * 3, dtype=np.int32).reshape(50, 3)
Y = np.arange(50, dtype=np.int32)  # the label names the example
BATCH = 8
BATCHES_PER_PASS = math.ceil(50 / BATCH)  # 7: six of 8, then a partial batch of 2


def _stream(seed: int = 7, **options) -> pipeline.TrainStream:
    return pipeline.TrainStream(X, Y, batch_size=BATCH, seed=seed, **options)


def _batches(dataset, count: int) -> list:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_stream_passes_are_seeded_permutations_reshuffled_each_pass():
    batches = _batches(_stream().batches(), 3 * BATCHES_PER_PASS)
    sizes = [len(y) for _, y in batches]
    assert sizes == ([BATCH] * 6 + [2]) * 3  # each pass ends with its partial batch
    passes = [np.concatenate([y for _, y in batches[i * 7 : (i + 1) * 7]]) for i in range(3)]
    for labels in passes:
        assert sorted(labels) == list(range(50))  # every example exactly once per pass
    assert not np.array_equal(passes[0], passes[1])  # reshuffled every pass
    assert not np.array_equal(passes[1], passes[2])
    for x, y in batches:
        np.testing.assert_array_equal(x, X[y])  # features stay with their labels

    again = _batches(_stream().batches(), 3 * 7)
    other = _batches(_stream(seed=8).batches(), 7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(batches, other))


@pytest.mark.parametrize(
    "start_step",
    [1, 5, BATCHES_PER_PASS - 1, BATCHES_PER_PASS, BATCHES_PER_PASS + 3, 2 * BATCHES_PER_PASS + 6],
)
def test_stream_positioned_at_a_step_equals_skipping_to_it(start_step):
    """What a resumed run (or any loop at global step k) sees is batch k onwards."""
    expected = _batches(_stream().batches().skip(start_step), BATCHES_PER_PASS + 2)
    actual = _batches(_stream().batches(start_step), BATCHES_PER_PASS + 2)
    assert len(actual) == len(expected) == BATCHES_PER_PASS + 2
    for (xa, ya), (xe, ye) in zip(actual, expected):
        np.testing.assert_array_equal(ya, ye)
        np.testing.assert_array_equal(xa, xe)


@pytest.mark.parametrize("start_step", [0, 3, BATCHES_PER_PASS - 1, BATCHES_PER_PASS + 2])
def test_full_and_partial_batches_cut_the_stream_in_two(start_step):
    """The tape loop reads the full batches and the partial ones from two datasets, each
    with a static batch size; in stream order they are the stream's batches."""
    stream = _stream()
    full, partial = stream.full_batches(start_step), stream.partial_batches(start_step)
    assert [spec.shape.as_list() for spec in full.element_spec] == [[BATCH, 3], [BATCH]]
    assert [spec.shape.as_list() for spec in partial.element_spec] == [[2, 3], [2]]
    full, partial = iter(full), iter(partial)
    for step, (x, y) in enumerate(
        _batches(stream.batches(start_step), 2 * BATCHES_PER_PASS), start=start_step
    ):
        is_partial = stream.next_partial_step(step) == step
        assert is_partial == (step % BATCHES_PER_PASS == BATCHES_PER_PASS - 1)
        xa, ya = next(partial if is_partial else full)
        np.testing.assert_array_equal(ya, y)
        np.testing.assert_array_equal(xa, x)


def test_whole_batches_only_when_the_batch_size_divides_the_data():
    stream = pipeline.TrainStream(X[:48], Y[:48], batch_size=BATCH, seed=7)
    assert stream.partial_size == 0 and stream.next_partial_step(5) is None
    with pytest.raises(ValueError, match="no partial batches"):
        stream.partial_batches()
    for (xa, ya), (xe, ye) in zip(
        _batches(stream.full_batches(4), 8), _batches(stream.batches(4), 8)
    ):
        np.testing.assert_array_equal(ya, ye)
        np.testing.assert_array_equal(xa, xe)


def _graph(dataset: tf.data.Dataset):
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())
    return graph


def _op(node) -> str:
    """'ShuffleDatasetV3' -> 'Shuffle': the dataset op without its version."""
    return node.op.split("Dataset")[0]


def _input_of(nodes: dict, name: str):
    return nodes[name.split(":")[0].lstrip("^")]


def _stages(nodes: dict, node) -> list:
    """The dataset ops from `node` back to the source, following each first input."""
    stages = []
    while node.op.endswith("Dataset"):
        stages.append(node)
        node = _input_of(nodes, node.input[0])
    return stages


def _body_ops(graph, function_prefix: str) -> list:
    (function,) = [
        f for f in graph.library.function if f.signature.name.startswith(function_prefix)
    ]
    return [node.op for node in function.node_def]


@pytest.mark.parametrize("rows_per_gather", [1, 12, 16, 48, 56])
def test_stream_batches_do_not_depend_on_the_gathered_parts(rows_per_gather):
    """Parts of 1 batch (1 and 12 round down to 8 rows), 2, 6 (then a part of just the partial
    batch) or 7 (the whole pass): the same batches as the default, one part per pass here."""
    whole_passes = _stream().batches()
    in_parts = _stream(rows_per_gather=rows_per_gather).batches()
    for (xe, ye), (xa, ya) in zip(
        *(_batches(s, 2 * BATCHES_PER_PASS + 1) for s in (whole_passes, in_parts))
    ):
        np.testing.assert_array_equal(ya, ye)
        np.testing.assert_array_equal(xa, xe)


def test_pipeline_gathers_parts_of_each_pass_ahead_then_slices_their_batches():
    """pad (numpy) -> per pass: seeded permutation -> its parts, each one gather (a part
    ahead) -> batches sliced from the part -> prefetch, read from the dataset's graph."""
    stream = _stream().batches()
    assert not stream.options().autotune.enabled
    graph = _graph(stream)
    nodes = {node.name: node for node in graph.node}
    (retval,) = [node for node in graph.node if node.op == "_Retval"]
    stages = _stages(nodes, _input_of(nodes, retval.input[0]))
    assert [_op(node) for node in stages] == [
        "Options",
        "Prefetch",
        "Skip",
        "FlatMap",
        "Prefetch",
        "Map",
        "FlatMap",
        "Map",
        "Range",
    ]
    for prefetch, ahead in ((stages[1], pipeline.BATCHES_AHEAD), (stages[4], 1)):  # batches; a part
        assert tf.make_ndarray(_input_of(nodes, prefetch.input[1]).attr["value"].tensor) == ahead
    # Each pass (Map over pass numbers): one permutation, cut into parts of rows...
    permutation = _body_ops(graph, "__inference_Dataset_map_TrainStream._permutation")
    assert permutation.count("StatelessShuffle") == 1
    assert "TensorSliceDataset" in _body_ops(graph, "__inference_Dataset_flat_map_parts_of")
    # ...each part one gather of each array...
    assert _body_ops(graph, "__inference_Dataset_map_TrainStream._gather").count("GatherV2") == 2
    # ...then its batches are slices of it, with the partial batch last.
    batch_ops = _body_ops(graph, "__inference_Dataset_flat_map_batches_of")
    assert {"TensorSliceDataset", "TensorDataset", "ConcatenateDataset"} <= set(batch_ops)
    every_op = [node.op for node in graph.node] + [
        node.op for function in graph.library.function for node in function.node_def
    ]
    assert not {"ShuffleDatasetV3", "BatchDatasetV2", "CacheDatasetV2"} & set(every_op)


def test_validation_batches_are_complete_and_in_order():
    dataset = pipeline.validation_dataset(X, Y, batch_size=BATCH)
    for _ in range(2):  # the same order every time
        batches = _batches(dataset, 100)
        assert [len(y) for _, y in batches] == [BATCH] * 6 + [2]
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), Y)
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), X)


def test_steps_for():
    assert pipeline.steps_for(250, 32, None) == 8
    assert pipeline.steps_for(256, 32, None) == 8
    assert pipeline.steps_for(250, 32, 3) == 3


# --- The real Reuters file -------------------------------------------------------------------


def _load_reuters(data_dir, max_len=100, num_examples=None):
    return data.load(
        "reuters",
        num_words=10000,
        max_len=max_len,
        seed=42,
        num_classes=46,
        num_examples=num_examples,
        data_dir=str(data_dir),
    )


def test_reuters_loads_from_data_dir(shared_data, reuters_npz):
    before = reuters_npz.stat()
    splits = _load_reuters(shared_data)
    assert splits.x_train.shape == (8982, 100) and splits.x_val.shape == (2246, 100)
    assert splits.y_train.shape == (8982,) and splits.y_val.shape == (2246,)
    assert splits.x_train.dtype == np.int32 and splits.y_train.dtype == np.int32
    assert splits.num_classes == 46
    labels = np.concatenate([splits.y_train, splits.y_val])
    assert labels.min() == 0 and labels.max() == 45
    assert splits.x_train.max() < 10000  # --num_words
    # 'pre' padding: short wires are zeros then the start mark 1 ...
    padded = splits.x_train[splits.x_train[:, 0] == 0]
    assert len(padded) > 1000
    _assert_pre_padded(padded)
    assert np.all(padded[np.arange(len(padded)), (padded != 0).argmax(axis=1)] == 1)
    # ... and 'pre' truncation: long wires lose their beginning (and the start mark).
    long_rows = splits.x_train[splits.x_train[:, 0] != 0]
    assert len(long_rows) > 1000 and np.mean(long_rows[:, 0] == 1) < 0.1
    after = reuters_npz.stat()
    assert (after.st_size, after.st_mtime) == (before.st_size, before.st_mtime)


@pytest.mark.slow
def test_reuters_end_to_end(shared_data, reuters_npz, make_config, run_train, load_json):
    config = make_config(
        mode="tape",
        dataset="reuters",
        data_dir=str(shared_data),
        num_examples=None,
        max_len=100,
        num_words=10000,
        steps_per_epoch=5,
        validation_steps=2,
        epochs=2,
        run_name="reuters",
    )
    result, lines = run_train(config)
    run_dir = Path(result.run_dir)
    history = load_json(run_dir / "history.json")
    assert history["epoch"] == [1, 2]
    for name in ("loss", "accuracy", "top5_accuracy", "val_loss", "val_accuracy"):
        assert len(history[name]) == 2 and all(np.isfinite(history[name])), name
    flags = load_json(run_dir / "flags.json")
    assert flags["dataset"] == "reuters" and flags["data_dir"] == str(shared_data)
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-10")
    assert "8982 train / 2246 validation" in "\n".join(lines)


def test_num_examples_keeps_the_first_reuters_training_examples(shared_data, reuters_npz):
    whole = _load_reuters(shared_data, max_len=50)
    subset = _load_reuters(shared_data, max_len=50, num_examples=300)
    np.testing.assert_array_equal(subset.x_train, whole.x_train[:300])
    np.testing.assert_array_equal(subset.y_train, whole.y_train[:300])
    np.testing.assert_array_equal(subset.x_val, whole.x_val)  # validation stays whole
    assert len(set(subset.y_train)) > 20  # the loader's seeded shuffle: a mix of topics


@pytest.mark.slow
def test_a_reuters_subset_trains_on_its_own_steps(
    shared_data, reuters_npz, make_config, run_train, load_json
):
    config = make_config(
        mode="fit",
        dataset="reuters",
        data_dir=str(shared_data),
        num_examples=300,
        max_len=50,
        validation_steps=1,
        run_name="subset",
    )
    result, lines = run_train(config)
    assert "300 train / 2246 validation" in "\n".join(lines)
    checkpoint = tf.train.latest_checkpoint(str(Path(result.run_dir) / "checkpoints"))
    assert checkpoint.endswith("ckpt-10")  # ceil(300 / 32) steps in its one epoch
    assert load_json(Path(result.run_dir) / "flags.json")["num_examples"] == 300


def test_num_examples_beyond_the_training_split_is_a_clear_error(
    shared_data, reuters_npz, make_config, run_train, logdir
):
    with pytest.raises(
        UsageError,
        match=r"--num_examples=9000 is not allowed: reuters has "
        r"8982 training examples",
    ):
        run_train(make_config(dataset="reuters", data_dir=str(shared_data), num_examples=9000))
    assert not logdir.exists()


def test_missing_data_dir_is_a_clear_error(tmp_path, make_config, run_train, logdir):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UsageError, match="--data_dir=.*is not a folder") as error:
        run_train(make_config(dataset="reuters", data_dir=str(missing)))
    assert "reuters.npz" in str(error.value)
    assert not logdir.exists()


def test_data_dir_without_the_file_is_a_clear_error(tmp_path, make_config, run_train, logdir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no reuters.npz") as error:
        run_train(make_config(dataset="reuters", data_dir=str(empty)))
    assert "--data_dir" in str(error.value)
    assert not logdir.exists()
    assert list(empty.iterdir()) == []


def test_truncated_file_fails_its_hash_check(
    tmp_path, reuters_npz, make_config, run_train, logdir, offline
):
    folder = tmp_path / "truncated"
    folder.mkdir()
    content = reuters_npz.read_bytes()
    (folder / "reuters.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(UsageError, match="hash check"):
        run_train(make_config(dataset="reuters", data_dir=str(folder)))
    assert not logdir.exists()
    # The user's file is left as it was (Keras deletes only its private copy).
    assert (folder / "reuters.npz").read_bytes() == content[: len(content) // 2]


def test_no_data_dir_offline_points_to_data_dir(
    tmp_path, monkeypatch, offline, make_config, run_train, logdir
):
    """With an empty Keras cache and no network: a hint about --data_dir, no traceback."""
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path / "keras"))
    with pytest.raises(UsageError, match="--data_dir"):
        run_train(make_config(dataset="reuters"))
    assert not logdir.exists()


def test_a_copy_of_the_real_file_in_another_folder_works(tmp_path, reuters_npz):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copyfile(reuters_npz, folder / "reuters.npz")
    splits = _load_reuters(folder, max_len=20)
    assert splits.x_train.shape == (8982, 20)
    assert sorted(p.name for p in folder.iterdir()) == ["reuters.npz"]  # nothing added
