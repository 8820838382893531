"""`python -m harness.sweep`: a 2x2 grid interrupted and rerun trains each trial once,
ranks them and writes the HParams experiment; bad input is one line and writes nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import proc_util
import pytest
from tensorboard.plugins.hparams import metadata as hparams_metadata

from callbacks import events

GRID = "learning_rate=1e-3,3e-3;optimizer=adam,nadam"
TRIALS = ("t00-lr1e-3-adam", "t01-lr1e-3-nadam", "t02-lr3e-3-adam", "t03-lr3e-3-nadam")
EPOCHS = 2
EXPERIMENT = hparams_metadata.EXPERIMENT_TAG
FLAGS = [
    "--name=s",
    f"--grid={GRID}",
    f"--epochs={EPOCHS}",
    "--num_examples=100",
    "--max_len=60",
    "--num_words=1000",
    "--parallel=2",
    *proc_util.OBSERVERS_OFF_FLAGS,
]


def sweep(args: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.sweep", *args],
        cwd=cwd,
        env=proc_util.harness_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def _an_epoch_done(sweep_dir: Path) -> bool:
    return any((sweep_dir / trial / "history.json").exists() for trial in TRIALS)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """The sweep SIGINTed once a trial has finished its first epoch, then rerun."""
    work = tmp_path_factory.mktemp("sweep")
    sweep_dir = work / "logs" / "s"
    with open(work / "first.out", "w") as out, open(work / "first.err", "w") as err:
        first = subprocess.Popen(
            [sys.executable, "-m", "harness.sweep", *FLAGS],
            cwd=work,
            env=proc_util.harness_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not _an_epoch_done(sweep_dir) and first.poll() is None:
            assert time.monotonic() < deadline, "no trial finished an epoch in 120 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        first_code = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    rerun = sweep(FLAGS, work, timeout=240)
    return {
        "work": work,
        "sweep_dir": sweep_dir,
        "first_code": first_code,
        "first": (work / "first.out").read_text(),
        "first_err": (work / "first.err").read_text(),
        "rerun": rerun,
    }


@pytest.mark.slow
def test_an_interrupted_sweep_rerun_trains_each_trial_once(interrupted):
    assert interrupted["first_code"] == 130, interrupted["first_err"][-3000:]
    assert "harness: sweep interrupted; resume with:" in interrupted["first_err"]
    rerun = interrupted["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lines = (interrupted["first"] + rerun.stdout).splitlines()
    for trial in TRIALS:
        mine = [line for line in lines if line.split()[1:2] == [trial]]
        assert sum(line.endswith(f"{trial} started") for line in mine) == 1, mine
        history = json.loads((interrupted["sweep_dir"] / trial / "history.json").read_text())
        assert history["epoch"] == list(range(1, EPOCHS + 1)), (trial, history["epoch"])
        steps = events.read(str(interrupted["sweep_dir"] / trial / "train")).steps("epoch_loss")
        assert len(steps) == EPOCHS and not proc_util.duplicates(steps), (trial, steps)
    assert "already: skipped" in rerun.stdout or " resumed after epoch " in rerun.stdout


@pytest.mark.slow
def test_the_sweep_ends_with_the_trials_ranked_and_the_best_dir(interrupted):
    sweep_dir = interrupted["sweep_dir"]
    rows = json.loads((sweep_dir / "results.json").read_text())
    assert sorted(row["trial"] for row in rows) == sorted(TRIALS)
    best = [row["best"] for row in rows]
    assert best == sorted(best), rows  # val_loss: lower first
    assert all(row["status"] == "finished" and row["epochs"] == EPOCHS for row in rows)
    out = interrupted["rerun"].stdout
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert header.split()[:5] == ["rank", "trial", "learning_rate", "optimizer", "val_loss"]
    assert f"best trial: {os.path.join('logs', 's', rows[0]['trial'])}" in out


@pytest.mark.slow
def test_the_sweep_root_holds_the_swept_domains(interrupted):
    sweep_dir = interrupted["sweep_dir"]
    content = events.read(str(sweep_dir)).metadata[EXPERIMENT].plugin_data.content
    experiment = hparams_metadata.parse_experiment_plugin_data(content)
    names = [info.name for info in experiment.hparam_infos]
    assert len(names) == len(set(names)), names
    domains = {
        info.name: [
            getattr(value, value.WhichOneof("kind")) for value in info.domain_discrete.values
        ]
        for info in experiment.hparam_infos
    }
    assert domains["learning_rate"] == [0.001, 0.003]
    assert domains["optimizer"] == ["adam", "nadam"]
    assert names == ["learning_rate", "optimizer"]  # what differs between the trials
    first = experiment.metric_infos[0].name
    assert (first.group, first.tag) == ("validation", "epoch_loss")  # --monitor first


@pytest.mark.slow
def test_a_rerun_asking_for_another_sweep_is_refused(interrupted):
    before = proc_util.snapshot(interrupted["work"] / "logs")
    other = [arg if not arg.startswith("--grid") else "--grid=learning_rate=1e-2" for arg in FLAGS]
    refused = sweep(other, interrupted["work"], timeout=60)
    proc_util.assert_one_error_line(refused, "holds another sweep")
    assert proc_util.snapshot(interrupted["work"] / "logs") == before


@pytest.mark.slow
def test_a_trial_with_a_damaged_history_is_refused(interrupted, tmp_path):
    shutil.copytree(interrupted["work"] / "logs", tmp_path / "logs")
    (tmp_path / "logs" / "s" / TRIALS[0] / "history.json").write_text('{"epoch": [1, 2')
    before = proc_util.snapshot(tmp_path / "logs")
    refused = sweep(FLAGS, tmp_path, timeout=60)
    proc_util.assert_one_error_line(refused, f"trial {TRIALS[0]}: ")
    assert "history.json is unreadable" in refused.stderr
    assert proc_util.snapshot(tmp_path / "logs") == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--grid=learning_rat=1e-3,3e-3"],
            "unknown flag --learning_rat (did you mean --learning_rate",
        ),
        (["--random=2", "--ranges=learning_rate=1e-2:1e-3"], "is empty"),
        (["--grid=learning_rate="], "has no values"),
        (["--grid=run_name=a,b"], "--run_name cannot be swept"),
        (["--grid=learning_rate=1e-3,3e-3", "--learning_rate=0.1"], "swept and also given"),
        (["--grid=learning_rate=1e-3", "--epochs=0"], "--epochs"),
        (["--grid=batch_size=16"], "--name"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragment):
    name = [] if fragment == "--name" else ["--name=s"]
    refused = sweep([*name, *args], tmp_path, timeout=60)
    proc_util.assert_one_error_line(refused, fragment)
    assert proc_util.snapshot(tmp_path) == {}


@pytest.mark.slow
def test_only_the_sweep_root_holds_an_experiment_config(interrupted):
    # TensorBoard's HParams tab shows one experiment config, from whichever run has one.
    for trial in TRIALS:
        found = events.read(str(interrupted["sweep_dir"] / trial))
        assert hparams_metadata.EXPERIMENT_TAG not in found.metadata, trial
        assert hparams_metadata.SESSION_START_INFO_TAG in found.metadata, trial


def test_random_draws_are_stable_and_in_range():
    from harness import sweep_space

    spec = "learning_rate=1e-4:1e-2;batch_size=16,32;epochs=1:3"
    dimensions = sweep_space.parse("ranges", spec, ranges_allowed=True)
    assert dimensions[0].log_uniform and not dimensions[2].log_uniform
    draws = sweep_space.draws(dimensions, 20, seed=1)
    assert draws == sweep_space.draws(dimensions, 20, seed=1)
    assert all(1e-4 <= float(draw["learning_rate"]) <= 1e-2 for draw in draws)
    assert {draw["batch_size"] for draw in draws} == {"16", "32"}
    assert {int(draw["epochs"]) for draw in draws} <= {1, 2, 3}
    name = sweep_space.trial_name(3, {"learning_rate": "0.003", "optimizer": "adam"}, 2)
    assert name == "t03-lr0.003-adam"
