"""TensorBoard's Projector: every run's Embedding layers, with the words as metadata.

Real tiny runs (one per loop, two epochs) write `<run>/train/embeddings-<epoch>.*`,
`checkpoint`, `projector_config.pbtxt` and `metadata.tsv`; the tests read them back
with TensorFlow's checkpoint reader and the projector's own config proto, and the
real TensorBoard server serves them through the projector plugin's HTTP API.
The tests that train (about 30 s on 2 cores) are marked slow, as in the rest of the suite.

Routes (TensorBoard 2.21):

    GET /data/plugin/projector/runs
    GET /data/plugin/projector/info?run=<run>/train
    GET /data/plugin/projector/metadata?run=<run>/train&name=<tensor name>
    GET /data/plugin/projector/tensor?run=<run>/train&name=<tensor name>
"""

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import tb_util  # noqa: E402  (also puts the repository root on sys.path)
import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorboard.plugins.projector import ProjectorConfig  # noqa: E402

from harness import data, multi_io, sources, train  # noqa: E402
from harness.callbacks import files  # noqa: E402
from harness.callbacks.embeddings import (  # noqa: E402
    TENSOR_SUFFIX,
    EmbeddingProjector,
    embedding_layers,
    row_labels,
)

MODES = ("fit", "train_on_batch", "tape")
EPOCHS = 2
KEYWORD = re.compile(r"class(\d+)_kw(\d+)")
ON = dict(embeddings_freq=1)  # the tests' tiny config turns it off


class FinalWeights(keras.callbacks.Callback):
    """Keeps each Embedding layer's weights at the end of training."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = {}

    def on_train_end(self, logs=None) -> None:
        self.weights = {
            name: np.array(layer.embeddings) for name, layer in embedding_layers(self.model).items()
        }


def _train(config) -> tuple:
    """(run directory, {checkpoint name: final weights}) of a real run."""
    final = FinalWeights()
    result = train(config, print_fn=lambda line: None, callbacks=[final])
    return Path(result.run_dir), final.weights


def _config(folder: Path) -> ProjectorConfig:
    config = ProjectorConfig()
    text_format.Parse((folder / "projector_config.pbtxt").read_text(), config)
    return config


def _metadata(folder: Path, name: str = "metadata.tsv") -> list:
    return (folder / name).read_text().split("\n")[:-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config) -> tuple:
    """(logdir, {mode: (run directory, final weights)}): two epochs in each loop."""
    logdir = tmp_path_factory.mktemp("projector") / "logs"
    return logdir, {
        mode: _train(tiny_config(logdir, mode=mode, run_name=mode, epochs=EPOCHS, **ON))
        for mode in MODES
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_projector_config_names_every_embedding(runs, mode):
    run_dir, weights = runs[1][mode]
    config = _config(run_dir / "train")
    assert [e.tensor_name for e in config.embeddings] == [n + TENSOR_SUFFIX for n in weights]
    assert [e.metadata_path for e in config.embeddings] == ["metadata.tsv"]
    assert not config.model_checkpoint_path  # the plugin follows the newest checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_holds_the_final_weights(runs, mode):
    run_dir, weights = runs[1][mode]
    folder = run_dir / "train"
    latest = tf.train.latest_checkpoint(str(folder))
    assert latest == str(folder / f"embeddings-{EPOCHS}")
    # Only the newest checkpoint is kept.
    assert sorted(p.name for p in folder.glob("embeddings-*")) == [
        f"embeddings-{EPOCHS}.data-00000-of-00001",
        f"embeddings-{EPOCHS}.index",
    ]
    reader = tf.train.load_checkpoint(latest)
    (name, final), *others = weights.items()
    assert not others
    assert final.shape == (1000, final.shape[1])
    saved = reader.get_tensor(name + TENSOR_SUFFIX)
    np.testing.assert_array_equal(saved, final)
    shapes = reader.get_variable_to_shape_map()
    assert [k for k, s in shapes.items() if len(s) == 2] == [name + TENSOR_SUFFIX]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_metadata_has_a_line_per_row_with_the_keywords(runs, mode):
    run_dir, weights = runs[1][mode]
    lines = _metadata(run_dir / "train")
    assert len(lines) == next(iter(weights.values())).shape[0] == 1000
    assert lines[:3] == ["<pad>", "<start>", "<oov>"]
    assert all("\t" not in line and line for line in lines)
    keywords = [KEYWORD.fullmatch(line) for line in lines]
    classes = {int(m.group(1)) for m in keywords if m}
    assert classes == set(range(46)) and sum(map(bool, keywords)) == 46 * 4
    assert all(lines[i] == f"w{i}" for i, m in enumerate(keywords) if i >= 3 and not m)
    splits = data.synthetic(num_examples=250, num_words=1000, max_len=60, num_classes=46, seed=42)
    assert tuple(lines) == splits.words


@pytest.mark.slow
def test_subclassed_model_and_its_resume(make_config):
    """A `keras.Model` subclass (its Embedding is an attribute); a resumed run (a
    new `train`) writes the next epoch into the same files and drops the older one."""
    config = make_config(model="subclass", run_name="sub", epochs=1, **ON)
    run_dir, weights = _train(config)
    folder = run_dir / "train"
    assert list(weights) == ["embedding"]
    assert [e.tensor_name for e in _config(folder).embeddings] == ["embedding" + TENSOR_SUFFIX]
    first = _metadata(folder)
    run_dir, weights = _train(
        make_config(model="subclass", run_name="sub", epochs=2, resume=True, **ON)
    )
    latest = tf.train.latest_checkpoint(str(folder))
    assert latest == str(folder / "embeddings-2")
    assert not list(folder.glob("embeddings-1*"))
    saved = tf.train.load_checkpoint(latest).get_tensor("embedding" + TENSOR_SUFFIX)
    np.testing.assert_array_equal(saved, weights["embedding"])
    assert _metadata(folder) == first


@pytest.mark.slow
def test_reuters_words_from_the_word_index(make_config, shared_data, reuters_npz):
    with open(shared_data / "reuters_word_index.json") as f:
        index = json.load(f)
    by_rank = {rank: word for word, rank in index.items()}
    config = make_config(dataset="reuters", data_dir=str(shared_data), **ON)
    run_dir, weights = _train(config)
    lines = _metadata(run_dir / "train")
    assert len(lines) == 1000
    assert lines[:5] == ["<pad>", "<start>", "<oov>", "id_3", "the"]
    assert all(lines[rank + 3] == by_rank[rank] for rank in range(1, 997))


def test_keras_words_without_a_word_index(tmp_path, monkeypatch):
    """No word index beside the data or in the Keras cache: no words (id_<i> labels)."""
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    assert data.keras_words("reuters", str(tmp_path), 1000) is None
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "imdb_word_index.json").write_text('{"the": 1, "and": 2}')
    words = data.keras_words("imdb", None, 6)
    assert words == ("<pad>", "<start>", "<oov>", "id_3", "the", "and")


def test_multi_io_and_nested_models_without_training(tmp_path):
    """multi_io's two Embeddings (title, body) inside a subclassed model that also
    holds a nested Sequential whose Embedding has a clashing name and another size:
    one entry each, names told apart, one metadata file per size."""
    tickets = multi_io.synthetic(
        num_examples=20, num_words=50, max_len=16, num_departments=4, seed=1
    )
    assert tickets.words[multi_io.URGENT_WORD] == "<urgent>" and len(tickets.words) == 50
    functional = multi_io.build(16, 4, 50)
    clash = next(iter(embedding_layers(functional).values())).name
    nested = keras.Sequential(
        [keras.Input((4,), dtype="int32"), keras.layers.Embedding(9, 3, name=clash)], name="inner"
    )

    class Both(keras.Model):
        def __init__(self):
            super().__init__()
            self.tickets, self.inner = functional, nested

    both = Both()
    callback = EmbeddingProjector(str(tmp_path), 1, tickets.words)
    callback.set_model(both)
    callback.on_epoch_end(0)
    folder = tmp_path / "train"
    config = _config(folder)
    names = [e.tensor_name[: -len(TENSOR_SUFFIX)] for e in config.embeddings]
    assert len(names) == len(set(names)) == 3
    assert sorted(e.metadata_path for e in config.embeddings) == [
        "metadata-9.tsv",
        "metadata.tsv",
        "metadata.tsv",
    ]
    assert _metadata(folder) == list(tickets.words)
    assert _metadata(folder, "metadata-9.tsv") == ["<pad>", "<start>", "<oov>"] + [
        tickets.words[i] for i in range(3, 9)
    ]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))
    layers = embedding_layers(both)
    assert list(layers) == names
    for name in names:
        saved = reader.get_tensor(name + TENSOR_SUFFIX)
        np.testing.assert_array_equal(saved, np.array(layers[name].embeddings))


def test_frequency_and_models_without_embeddings(tmp_path):
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    callback = EmbeddingProjector(str(tmp_path), 1, None)
    callback.set_model(dense)
    callback.on_epoch_end(0)
    assert not (tmp_path / "train").exists()

    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(5, 2)])
    (tmp_path / "every2").mkdir()  # the run directory (it is never created here)
    callback = EmbeddingProjector(str(tmp_path / "every2"), 2, None)
    callback.set_model(model)
    callback.on_epoch_end(0)  # epoch 1
    assert not (tmp_path / "every2" / "train").exists()
    callback.on_epoch_end(1)  # epoch 2
    folder = tmp_path / "every2" / "train"
    assert tf.train.latest_checkpoint(str(folder)) == str(folder / "embeddings-2")
    assert _metadata(folder) == ["<pad>", "id_1", "id_2", "id_3", "id_4"]


def test_a_deleted_run_directory_is_a_write_failure_and_stays_deleted(tmp_path):
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(5, 2)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    callback = EmbeddingProjector(str(run_dir), 1, None)
    callback.set_model(model)
    callback.on_epoch_end(0)
    shutil.rmtree(run_dir)
    with pytest.raises(files.WriteFailed, match="embeddings-2"):
        callback.on_epoch_end(1)
    assert not run_dir.exists()  # TensorFlow would have made it again
    fresh = EmbeddingProjector(str(run_dir), 1, None)  # the first write of a process
    fresh.set_model(model)
    with pytest.raises(files.WriteFailed):
        fresh.on_epoch_end(0)
    assert not run_dir.exists()


def test_row_labels():
    assert row_labels(None, 3) == ["<pad>", "id_1", "id_2"]
    assert row_labels(("", "[UNK]", "a\tb", "  "), 5) == ["<pad>", "[UNK]", "a b", "id_3", "id_4"]
    # A text folder's TextVectorization vocabulary: '' pads, '[UNK]' stays.
    assert sources._words(("", "[UNK]", "the")) == ("<pad>", "[UNK]", "the")
    assert sources._words(None) is None


def test_cost_of_a_reuters_sized_embedding(tmp_path):
    """A 10000x64 table each epoch: milliseconds (the first write sets up the files)."""
    import time

    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(10000, 64)])
    callback = EmbeddingProjector(str(tmp_path), 1, None)
    callback.set_model(model)
    callback.on_epoch_end(0)
    times = []
    for epoch in range(1, 6):
        start = time.perf_counter()
        callback.on_epoch_end(epoch)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.25, times  # ~10 ms here; a loose bound on a noisy machine


@pytest.mark.slow
@pytest.mark.skipif(
    not tb_util.tensorboard_executable().exists(), reason="no tensorboard executable"
)
def test_tensorboard_projector_plugin_serves_the_runs(runs, tmp_path):
    logdir, by_mode = runs
    with tb_util.TensorBoardServer(logdir, tmp_path / "tensorboard.log") as server:
        wanted = {f"{mode}/train" for mode in MODES}
        listed = server.wait_for(
            lambda: wanted <= set(server.get_json("/data/plugin/projector/runs")) and wanted,
            what="the projector runs",
        )
        assert listed
        run_dir, weights = by_mode["tape"]
        (name, final), *_ = weights.items()
        info = server.get_json("/data/plugin/projector/info", run="tape/train")
        (embedding,) = info["embeddings"]
        assert embedding["tensorName"] == name + TENSOR_SUFFIX
        assert [int(n) for n in embedding["tensorShape"]] == list(final.shape)
        assert info["modelCheckpointPath"].endswith(f"embeddings-{EPOCHS}")
        status, body = server.get(
            "/data/plugin/projector/metadata", run="tape/train", name=embedding["tensorName"]
        )
        assert status == 200
        assert body.decode().split("\n")[:-1] == _metadata(run_dir / "train")
        status, body = server.get(
            "/data/plugin/projector/tensor", run="tape/train", name=embedding["tensorName"]
        )
        assert status == 200
        served = np.frombuffer(body, dtype=np.float32).reshape(final.shape)
        np.testing.assert_array_equal(served, final)
