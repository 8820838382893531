"""Edge cases of models, export and data (issue 25, items 9, 10 and 13).

9. `--export` of a model Keras cannot load back (an unregistered custom layer, a
   Lambda layer refused by safe mode) exports the model in memory with the best
   weights; a failing export is one error that keeps the run, and a finished run
   is exported later with `--resume --export`, without training.
10. A user model that cannot train (wrong head, several outputs, no trainable
   weights) or an import path that is no builder is one `harness: error:` line,
   exit 2, before the log directory exists; a builder that raises shows its own
   frames, then one harness line, exit 1.
13. Data offline: a failed download says so and names --data_dir; a --data_dir
   file that fails its hash check is reported even where a download would work.

(10) and (13a) run real `python -m harness.run` processes, all of (10) at once.
"""

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import proc_util  # noqa: E402  (also puts the repository root on sys.path)
import tensorflow as tf  # noqa: E402
from proc_util import assert_one_error_line, harness_lines  # noqa: E402

from harness.errors import UsageError  # noqa: E402
from tests import user_models  # noqa: E402

TINY_FLAGS = [
    "--num_examples=100",
    "--max_len=20",
    "--num_words=1000",
    "--verbose=0",
    "--epochs=1",
    "--histogram_freq=0",
    "--logdir=logs",
    "--run_name=r",
    *proc_util.OBSERVERS_OFF_FLAGS,
]


# --- 10: a user model that cannot train is refused before anything is written -------------

BAD_MODELS = {
    "wrong-units": (
        "tests.user_models:wrong_units",
        ["outputs [batch, 49]", "needs one output [batch, 46]"],
    ),
    "two-outputs": ("tests.user_models:two_outputs", ["has 2 outputs", "[batch, 46]"]),
    "no-trainable-weights": ("tests.user_models:no_weights", ["no trainable weights"]),
    "stdlib-function": ("os.path:join", ["is not a model builder", "TypeError"]),
    "wrong-signature": (
        "harness.models:sequential",
        ["takes (input_shape, task, num_words, x_train)", "not a builder"],
    ),
    "not-callable": ("tests.user_models:NOT_A_FUNCTION", ["names a int, not a builder"]),
}


@pytest.fixture(scope="module")
def bad_model_runs(tmp_path_factory) -> dict:
    """{case: CompletedProcess} of each bad --model (and the raising builder), all at once."""
    cases = {
        **{case: model for case, (model, _) in BAD_MODELS.items()},
        "raises": "tests.user_models:raises",
    }
    processes, results = {}, {}
    try:
        for case, model in cases.items():
            work = tmp_path_factory.mktemp(case)
            processes[case] = proc_util.Harness([*TINY_FLAGS, f"--model={model}"], work, name="out")
        for case, process in processes.items():
            code = process.wait(timeout=180)
            results[case] = subprocess.CompletedProcess(
                process.args, code, process.stdout, process.stderr
            )
            results[case].logdir_exists = (process.cwd / "logs").exists()
    finally:
        for process in processes.values():
            process.kill()
    return results


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
@pytest.mark.slow
def test_model_that_cannot_train_is_one_line_exit_2_before_the_logdir(bad_model_runs, case):
    model, fragments = BAD_MODELS[case]
    run = bad_model_runs[case]
    assert_one_error_line(run, f"--model={model!r}", *fragments)
    assert not run.logdir_exists


@pytest.mark.slow
def test_builder_that_raises_shows_its_own_frames_then_one_harness_line(bad_model_runs):
    run = bad_model_runs["raises"]
    assert run.returncode == 1, run.stderr[-3000:]
    lines = harness_lines(run.stderr)
    assert lines[0] == "Traceback (most recent call last):", lines
    text = "\n".join(lines)
    assert 'user_models.py", line' in text and "in _check_vocabulary" in text, text
    assert "harness/" not in text.replace("harness: error:", ""), text  # no harness frames
    assert lines[-2] == "ValueError: vocabulary size 10000 is not a power of two", lines
    assert lines[-1].startswith(
        "harness: error: --model='tests.user_models:raises': the "
        "builder raised ValueError: vocabulary size 10000"
    ), lines[-1]
    assert sum(line.startswith("harness:") for line in lines) == 1, lines
    assert not run.logdir_exists


# --- 9: export of models Keras cannot load back, a failed export, a later export ------------


def _serve(saved_model: Path, tokens: np.ndarray) -> np.ndarray:
    loaded = tf.saved_model.load(str(saved_model))
    return loaded.serve(tf.constant(tokens)).numpy()


def _tokens(config) -> np.ndarray:
    return np.random.default_rng(3).integers(
        0, config.num_words, (5, config.max_len), dtype=np.int32
    )


@pytest.mark.parametrize("builder", ["custom_layer", "lambda_layer"])
def test_export_of_a_model_keras_cannot_load_back_serves_the_best_weights(
    builder, make_config, run_train
):
    config = make_config(
        model=f"tests.user_models:{builder}",
        run_name=builder,
        export=True,
        histogram_freq=0,
        num_examples=100,
    )
    result, lines = run_train(config)
    run_dir = Path(result.run_dir)
    assert any(f"SavedModel written to {run_dir / 'saved_model'}" in line for line in lines)
    # The best weights in a fresh model from the same builder: what the export must serve.
    best = getattr(user_models, builder)((config.max_len,), 46)
    best.load_weights(run_dir / "best.keras")
    tokens = _tokens(config)
    np.testing.assert_allclose(
        _serve(run_dir / "saved_model", tokens), best.predict(tokens, verbose=0), atol=1e-5
    )


@pytest.mark.slow
def test_failed_export_keeps_the_run_and_resume_export_exports_it_without_training(tmp_path):
    """A real full disk: the run trains, the disk fills up, `--resume --export` fails
    as one line and leaves nothing half-written; with room again it exports."""
    flags = [*TINY_FLAGS, "--model=tests.user_models:tiny", "--epochs=2"]
    process = proc_util.in_a_tmpfs(
        tmp_path,
        """
$HARNESS > train.out 2> train.err; echo TRAIN-EXIT=$?
dd if=/dev/zero of=logs/filler bs=64k 2> /dev/null
$HARNESS --resume --export > full.out 2> full.err; echo FULL-EXIT=$?
echo LEFT: $(ls -a logs/r)
rm logs/filler
$HARNESS --resume --export > export.out 2> export.err; echo EXPORT-EXIT=$?
""",
        flags,
        size="60m",
    )
    output = process.stdout
    assert "TRAIN-EXIT=0" in output, (tmp_path / "train.err").read_text()[-2000:]
    assert "FULL-EXIT=1" in output, output + (tmp_path / "full.err").read_text()[-2000:]
    lines = [
        line
        for line in (tmp_path / "full.err").read_text().splitlines()
        if line.startswith("harness:")
    ]
    assert len(lines) == 1 and "Traceback" not in (tmp_path / "full.err").read_text(), lines
    for fragment in (
        "--export failed",
        "No space left on device",
        "--resume --export",
        "--run_name=r",
    ):
        assert fragment in lines[0], lines
    left = output.split("LEFT:")[1].split("EXPORT-EXIT")[0].split()
    assert not [name for name in left if "saved_model" in name or "tmp" in name], left
    assert {"best.keras", "checkpoints", "flags.json", "history.json"} <= set(left), left
    assert "EXPORT-EXIT=0" in output, (tmp_path / "export.err").read_text()[-2000:]
    assert "SavedModel written to" in (tmp_path / "export.out").read_text()
    run_dir = tmp_path / "after"
    assert len(json_history(run_dir)["epoch"]) == 2  # nothing trained again
    best = keras.saving.load_model(run_dir / "best.keras", safe_mode=True)
    tokens = np.random.default_rng(3).integers(0, 1000, (5, 20), dtype=np.int32)
    np.testing.assert_allclose(
        _serve(run_dir / "saved_model", tokens), best.predict(tokens, verbose=0), atol=1e-5
    )


def json_history(run_dir: Path) -> dict:
    import json

    with open(run_dir / "history.json") as f:
        return json.load(f)


# --- 13: data offline ---------------------------------------------------------------------


@pytest.mark.slow
def test_missing_reuters_offline_says_the_download_failed_and_names_data_dir(tmp_path, offline):
    """No --data_dir, an empty Keras cache (a temporary HOME), no internet."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(proc_util.harness_env(), HOME=str(home), KERAS_HOME=str(home / ".keras"))
    run = subprocess.run(
        [sys.executable, "-m", "harness.run", "--dataset=reuters", *TINY_FLAGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    line = assert_one_error_line(
        run,
        "--dataset=reuters",
        "reuters.npz",
        f"not in the Keras cache ({home / '.keras' / 'datasets'})",
        "the download failed",
        "no internet?",
        "--data_dir=",
    )
    assert "(Exception)" not in line
    assert re.search(r"download failed \(Exception: URL fetch failure on https?://\S+", line)
    assert not (tmp_path / "logs").exists()
    assert not (home / ".keras" / "datasets" / "reuters.npz").exists()


def test_data_dir_file_failing_its_hash_is_never_replaced_by_a_download(
    reuters_npz, tmp_path, monkeypatch, make_config, run_train, logdir
):
    """Keras's get_file downloads a file that fails its hash check. With a real
    proxy listening on 127.0.0.1 (it answers nothing), a download attempt shows
    as a connection: there must be none, and the user's file is reported."""
    connections = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            connections.append(connection.recv(200))
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "tampered"
    folder.mkdir()
    content = bytearray(reuters_npz.read_bytes())
    content[1000:1016] = bytes(b ^ 0xFF for b in content[1000:1016])
    (folder / "reuters.npz").write_bytes(bytes(content))
    try:
        with pytest.raises(UsageError, match=r"reuters.npz failed Keras's hash check"):
            run_train(make_config(dataset="reuters", data_dir=str(folder), max_len=40))
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert connections == []  # no download was tried
    assert not logdir.exists()
    assert (folder / "reuters.npz").read_bytes() == bytes(content)
    assert sorted(p.name for p in folder.iterdir()) == ["reuters.npz"]
