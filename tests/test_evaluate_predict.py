"""`python -m harness.evaluate` and `python -m harness.predict` on a real tiny Reuters run.

One run is trained once for the module (2 epochs of 10 steps: checkpoints 0, 10, 20);
its checkpoints are reopened in this process, and the CLI is run as a subprocess only
where exit statuses and lines are asserted (bad input fails before TensorFlow loads).
"""

import json
import subprocess
import sys

import numpy as np
import proc_util
import pytest
import user_data

from harness import rundir
from harness.config import Config


def tool(module: str, *args, cwd) -> subprocess.CompletedProcess:
    """`python -m harness.<module> ARGS`, run to the end."""
    return subprocess.run(
        [sys.executable, "-m", f"harness.{module}", *args],
        cwd=cwd,
        env=proc_util.harness_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config, reuters_npz):
    """A finished 2-epoch Reuters run: (logdir, run_dir, history)."""
    from harness import train

    logdir = tmp_path_factory.mktemp("evaluate") / "logs"
    result = train(
        news_config(tiny_config, logdir, reuters_npz, epochs=2), print_fn=lambda line: None
    )
    return logdir, result.run_dir, result.history


def news_config(tiny_config, logdir, reuters_npz, **overrides) -> Config:
    """The module's Reuters run, "news"."""
    return tiny_config(
        logdir,
        dataset="reuters",
        data_dir=str(reuters_npz.parent),
        num_examples=300,
        run_name="news",
        **overrides,
    )


def opened(trained, checkpoint: str):
    from harness import saved_run

    logdir, _, _ = trained
    return saved_run.open_run(saved_run.locate(str(logdir), "news", checkpoint))


@pytest.fixture(scope="module")
def best(trained):
    """The run reopened with its best model."""
    return opened(trained, "best")


@pytest.mark.slow
def test_best_on_validation_reproduces_the_best_epoch(trained, best):
    from harness import evaluate
    from harness.callbacks import events

    _, run_dir, history = trained
    epoch = int(np.argmin(history["val_loss"])) + 1  # the run's --monitor: val_loss
    lines = []
    record = evaluate.evaluate(best, "test", print_fn=lines.append)

    assert "no test split" in lines[0]  # built-in Reuters validates on Keras's test split
    assert record["split"] == "validation" and record["examples"] == 2246
    assert record["global_step"] == 10 * epoch and record["epoch"] == epoch
    for name, value in record["metrics"].items():
        np.testing.assert_allclose(value, history[f"val_{name}"][epoch - 1], rtol=1e-5)
    folder = f"{run_dir}/eval-best-validation"
    assert rundir.read_json(f"{folder}/eval.json") == record
    summaries = events.read(folder)
    assert summaries.scalars("evaluation_loss_vs_iterations") == [
        (record["global_step"], pytest.approx(record["metrics"]["loss"]))
    ]


@pytest.mark.slow
def test_latest_and_a_numbered_checkpoint(trained):
    from harness import evaluate

    _, run_dir, history = trained
    latest = evaluate.evaluate(opened(trained, "latest"), "validation", print_fn=lambda _: None)
    first = evaluate.evaluate(opened(trained, "ckpt-10"), "validation", print_fn=lambda _: None)

    assert (latest["global_step"], first["global_step"], first["epoch"]) == (20, 10, 1)
    np.testing.assert_allclose(latest["metrics"]["loss"], history["val_loss"][1], rtol=1e-5)
    np.testing.assert_allclose(first["metrics"]["loss"], history["val_loss"][0], rtol=1e-5)
    assert rundir.read_json(f"{run_dir}/eval-ckpt-10-validation/eval.json")["checkpoint"] == (
        "ckpt-10"
    )


@pytest.mark.slow
def test_predict_on_newswire_text_gives_the_validation_class(trained, best, tmp_path, reuters_npz):
    from harness import predict

    logdir, _, _ = trained
    run = best
    rows = run.splits.x_val[:6]
    index = json.loads((reuters_npz.parent / "reuters_word_index.json").read_text())
    rare = next(word for word, rank in index.items() if rank > 5000 and word.isalpha())
    words = run.splits.words  # an OOV id (2) stands for a word beyond --num_words
    texts = [" ".join(rare if t == 2 else words[t] for t in row if t >= 2) for row in rows]
    news = tmp_path / "news.txt"
    news.write_text("\n".join(texts) + "\n")

    names, x = predict.model_inputs(run, *predict.read_input([str(news)]))
    np.testing.assert_array_equal(x, rows)  # the real text tokenizes as the data did
    expected = run.model.predict(rows, verbose=0).argmax(axis=1)
    process = tool(
        "predict",
        f"--logdir={logdir}",
        "--run_name=news",
        f"--input={news}",
        "--json",
        cwd=tmp_path,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    results = json.loads(process.stdout)
    assert [r["input"] for r in results] == names == texts
    assert [r["top_k"][0]["class"] for r in results] == expected.tolist()
    assert all(len(r["top_k"]) == 3 for r in results)
    assert results[0]["top_k"][0]["name"] == run.splits.class_names[expected[0]]


@pytest.mark.slow
def test_predict_on_image_files_and_a_folder(tmp_path, tiny_config):
    from harness import predict, saved_run, train

    folder = user_data.digits_folder(tmp_path / "digits", per_class=6, validation_per_class=2)
    logdir = tmp_path / "logs"
    config = tiny_config(
        logdir, dataset=str(folder), image_size=(8, 8), epochs=1, run_name="img", num_examples=None
    )
    train(config, print_fn=lambda line: None)
    run = saved_run.open_run(saved_run.locate(str(logdir), "img", "best"))
    sevens = sorted(str(path) for path in (folder / "validation" / "7").glob("*.png"))
    names, x = predict.model_inputs(run, *predict.read_input([str(folder / "validation" / "7")]))
    assert names == sevens and x.shape == (2, 8, 8, 3)
    for row in x:  # scaled as the folder loader did: each is one of the validation images
        assert np.isclose(run.splits.x_val, row).all(axis=(1, 2, 3)).any()

    inputs = [f"--input={path}" for path in (*sevens, folder / "validation" / "0")]
    process = tool(
        "predict", f"--logdir={logdir}", "--run_name=img", *inputs, "--json", cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr[-2000:]
    results = json.loads(process.stdout)
    zeros = sorted(str(path) for path in (folder / "validation" / "0").glob("*.png"))
    assert [r["input"] for r in results] == [*sevens, *zeros]
    expected = run.model.predict(x, verbose=0).argmax(axis=1)
    assert [r["top_k"][0]["class"] for r in results[:2]] == expected.tolist()
    assert {r["top_k"][0]["name"] for r in results} <= set(run.splits.class_names)

    np.savez(tmp_path / "rows.npz", x=x)
    mixed = [*inputs[:1], f"--input={tmp_path / 'rows.npz'}"]
    refused = tool("predict", f"--logdir={logdir}", "--run_name=img", *mixed, cwd=tmp_path)
    proc_util.assert_one_error_line(refused, "must all be images")


@pytest.mark.slow
def test_evaluate_cli_prints_the_metrics(trained, tmp_path):
    logdir, run_dir, _ = trained
    process = tool(
        "evaluate", f"--logdir={logdir}", "--run_name=news", "--checkpoint=latest", cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "global step 20" in process.stdout and "top5_accuracy" in process.stdout
    assert f"written to {run_dir}/eval-latest-validation" in process.stdout


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path):
    logdir, run_dir, _ = trained
    (tmp_path / "junk.txt").write_bytes(bytes(range(128, 256)) * 4)
    np.savez(tmp_path / "nothing.npz")
    run = ["--logdir", str(logdir), "--run_name=news"]
    before = proc_util.snapshot(logdir)
    cases = [
        (
            "evaluate",
            [*run, "--checkpoint=ckpt-99"],
            "has no checkpoint ckpt-99: use one of ckpt-0",
        ),
        ("predict", [*run, f"--input={tmp_path / 'junk.txt'}"], "is not UTF-8 text"),
        ("predict", [*run, f"--input={tmp_path / 'missing.txt'}"], "cannot be read"),
        ("predict", [*run, f"--input={tmp_path / 'nothing.npz'}"], "holds no arrays"),
    ]
    for module, args, fragment in cases:
        proc_util.assert_one_error_line(tool(module, *args, cwd=tmp_path), fragment)
    claim = rundir.Claim(run_dir)  # as a training run holds it
    try:
        proc_util.assert_one_error_line(tool("evaluate", *run, cwd=tmp_path), "is in use")
    finally:
        claim.release()
    assert proc_util.snapshot(logdir) == before


def test_runs_that_cannot_be_reopened(tmp_path):
    """Fast: these fail before TensorFlow loads."""
    logdir = tmp_path / "logs"
    bare = logdir / "bare"  # a run that stopped before its first checkpoint
    bare.mkdir(parents=True)
    rundir.save_flags(Config(logdir=str(logdir), run_name="bare").validate(), str(bare))
    (logdir / "stray").mkdir()
    before = proc_util.snapshot(logdir)
    cases = [
        ("evaluate", ["--run_name=nope"], "there is no run"),
        ("evaluate", ["--run_name=stray"], "is no run of the harness"),
        ("evaluate", ["--run_name=bare"], "has no best model"),
        ("predict", ["--run_name=bare", "--checkpoint=latest", "--input=x.txt"], "no checkpoint"),
        ("evaluate", ["--run_name=bare", "--split=train"], "--split=train"),
    ]
    for module, args, fragment in cases:
        process = tool(module, f"--logdir={logdir}", *args, cwd=tmp_path)
        proc_util.assert_one_error_line(process, fragment)
    assert proc_util.snapshot(logdir) == before


@pytest.mark.slow
def test_a_resumed_run_keeps_its_evaluations(trained, tiny_config, reuters_npz):
    """Last in the module: it trains the shared run a third epoch."""
    from harness import train

    logdir, run_dir, _ = trained
    evaluations = proc_util.snapshot(f"{run_dir}/eval-best-validation")
    config = news_config(tiny_config, logdir, reuters_npz, epochs=3, resume=True)
    result = train(config, print_fn=lambda line: None)
    assert result.history["epoch"] == [1, 2, 3]
    assert proc_util.snapshot(f"{run_dir}/eval-best-validation") == evaluations
