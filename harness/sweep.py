"""Sweep hyperparameters: train one run per trial and rank them.

usage: python -m harness.sweep --name=NAME (--grid=SPEC | --random=N --ranges=SPEC)
       [--parallel=N] [--flag=value ...]

  python -m harness.sweep --name=lr-opt --epochs=3 \
      --grid='learning_rate=1e-3,3e-3;optimizer=adam,nadam'
  python -m harness.sweep --name=rand --random=8 \
      --ranges='learning_rate=1e-4:1e-2;batch_size=16,32,64'

Each trial is a `python -m harness.run` run <logdir>/<name>/<trial> with the
trial's values and every other flag given here. Rerunning the same command skips
finished trials and resumes interrupted ones; Ctrl-C checkpoints every running
trial. At the end: the trials ranked by --monitor, the best trial's directory,
<logdir>/<name>/results.json, and an HParams experiment holding the swept domains.
"""

# The entrypoint: flags -> validated trials (a Config each, before anything is
# written) -> trial subprocesses -> the ranked table. TensorFlow is imported only
# to write the HParams experiment config at the end.

import dataclasses
import glob
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from absl import app, flags

from harness import config as config_lib
from harness import report, rundir, sweep_space, sweep_table
from harness import run as run_lib  # defines the run's flags on FLAGS: passed to every trial
from harness.errors import HarnessError, UsageError
from harness.sweep_table import DONE, FAILED, INTERRUPTED, Trial

flags.DEFINE_string("name", None, "The sweep's folder under --logdir (letters, digits, . - _)")
flags.DEFINE_string("grid", None, "Every combination of flag values: 'flag=A,B;flag=C,D'")
flags.DEFINE_integer("random", 0, "Draw N trials from --ranges instead of a grid")
flags.DEFINE_string(
    "ranges",
    None,
    "With --random: 'flag=LOW:HIGH;flag=A,B' (rates and floats spanning >10x log-uniform)",
)
flags.DEFINE_integer("sweep_seed", 0, "Seed of the --random draws (--seed seeds each trial)")
flags.DEFINE_integer("parallel", 1, "Trials run at once; the CPU threads are split between them")
FLAGS = flags.FLAGS

SWEEP_FILE = "sweep.json"  # = callbacks.run_info.SWEEP_FILE: trials then write no experiment
RESULTS_FILE = "results.json"
CONSOLE_DIR = "console"  # each trial's console output, <trial>.txt
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONFIG_FLAGS = [field.name for field in dataclasses.fields(config_lib.Config)]
_POLL_SECONDS = 0.2


@dataclasses.dataclass
class Sweep:
    """What the flags ask for: the folder, the swept dimensions and the trials."""

    sweep_dir: str
    dimensions: list
    trials: list
    record: dict  # what sweep.json holds: a rerun must ask for the same


def plan() -> Sweep:
    """The sweep the flags describe, every trial's flags validated and its state
    read from disk; writes nothing.

    Raises:
        UsageError: a bad sweep flag, swept or passed flag, a sweep folder
            holding another sweep, or a trial's damaged history.json.
    """
    if not FLAGS.name or not _NAME.match(FLAGS.name):
        raise UsageError(f"--name={FLAGS.name!r}: name the sweep's folder (letters, digits, . - _)")
    if FLAGS.parallel < 1:
        raise UsageError(f"--parallel={FLAGS.parallel}: run at least 1 trial at a time")
    dimensions, values = _trial_values()
    passed = _passed_flags(dimensions)
    sweep_dir = os.path.join(FLAGS.logdir, FLAGS.name)
    rundir.check_logdir(FLAGS.logdir)
    width = len(str(len(values) - 1))
    trials = []
    for index, trial_values in enumerate(values):
        name = sweep_space.trial_name(index, trial_values, max(2, width))
        argv = passed + [f"--{flag}={value}" for flag, value in trial_values.items()]
        argv += _per_trial_defaults(passed) + [f"--logdir={sweep_dir}", f"--run_name={name}"]
        trials.append(Trial(name, trial_values, _config(name, argv), argv=argv))
    record = {
        "grid": FLAGS.grid,
        "ranges": FLAGS.ranges,
        "random": FLAGS.random,
        "sweep_seed": FLAGS.sweep_seed,
        "passed": passed,
        "trials": [{"name": trial.name, "values": trial.values} for trial in trials],
    }
    _check_same_sweep(sweep_dir, record)
    for trial in trials:
        trial.status = sweep_table.state(trial)  # read from disk: a damaged record is refused
    return Sweep(sweep_dir, dimensions, trials, record)


def _trial_values() -> tuple:
    if FLAGS.grid and (FLAGS.random or FLAGS.ranges):
        raise UsageError("--grid or --random with --ranges: not both")
    if FLAGS.grid:
        dimensions = sweep_space.parse("grid", FLAGS.grid, ranges_allowed=False)
        return dimensions, sweep_space.grid(dimensions)
    if FLAGS.random < 1 or not FLAGS.ranges:
        raise UsageError("give --grid='flag=A,B;...', or --random=N (N >= 1) with --ranges")
    dimensions = sweep_space.parse("ranges", FLAGS.ranges, ranges_allowed=True)
    return dimensions, sweep_space.draws(dimensions, FLAGS.random, FLAGS.sweep_seed)


def _passed_flags(dimensions: list) -> list:
    """The run flags given on the command line (but --logdir), as --name=value."""
    swept = {dimension.name for dimension in dimensions}
    if "monitor" in swept:
        raise UsageError("--monitor ranks the trials: pass one --monitor, do not sweep it")
    passed = []
    for name in _CONFIG_FLAGS:
        if not FLAGS[name].present or name == "logdir":
            continue
        if name in sweep_space.OWNED:
            raise UsageError(f"--{name} cannot be given to a sweep: it sets it for each trial")
        if name in swept:
            raise UsageError(f"--{name} is swept and also given: drop one")
        passed.append(FLAGS[name].serialize())
    return passed


def _per_trial_defaults(passed: list) -> list:
    """Quiet trials, and each its share of the CPU threads when several run at once."""
    given = {arg.split("=")[0].lstrip("-") for arg in passed}
    extra = [] if "verbose" in given else ["--verbose=0"]
    if FLAGS.parallel > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // FLAGS.parallel)
        for name in ("intra_op_threads", "inter_op_threads"):
            if name not in given:
                extra.append(f"--{name}={threads}")
    return extra


def _config(name: str, argv: list) -> config_lib.Config:
    """The validated Config of trial `name`, parsed as `harness.run` parses its flags."""
    flag_values = flags.FlagValues()
    run_lib.define_flags(flag_values)
    try:
        flag_values(["harness.run", *argv])
    except flags.Error as error:
        raise UsageError(f"trial {name}: {error}") from None
    return run_lib.config_from_flags(flag_values)


def _check_same_sweep(sweep_dir: str, record: dict) -> None:
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if os.path.exists(path) and rundir.read_json(path) != record:
        raise UsageError(
            f"{sweep_dir} holds another sweep (its {SWEEP_FILE} has other trials or flags): "
            "rerun it with the same flags, or choose another --name"
        )


class Runner:
    """Runs the trials, `parallel` at a time; a SIGINT/SIGTERM goes to every running one."""

    def __init__(self, sweep: Sweep, parallel: int) -> None:
        self.sweep = sweep
        self.parallel = parallel
        self.running = {}  # Popen -> (trial, start time)
        self.stopped_by = 0  # the signal that stopped the sweep
        self.done = 0

    def run(self) -> int:
        """Trains the trials not done yet; returns the stopping signal, or 0."""
        todo = []
        for trial in self.sweep.trials:
            if trial.status in DONE:
                self._say(trial, f"{trial.status} already: skipped")
                self.done += 1
            else:
                todo.append(trial)
        handlers = {
            sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while (todo and not self.stopped_by) or self.running:
                while todo and len(self.running) < self.parallel and not self.stopped_by:
                    self._start(todo.pop(0))
                time.sleep(_POLL_SECONDS)
                for process in [p for p in self.running if p.poll() is not None]:
                    self._finished(process)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return self.stopped_by

    def _forward(self, signal_number: int, frame) -> None:
        self.stopped_by = signal_number
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal_number)

    def _start(self, trial: Trial) -> None:
        argv = list(trial.argv)
        if trial.status == INTERRUPTED:
            argv.append("--resume")
            self._say(trial, f"resumed after epoch {len(trial.history()['epoch'])}")
        else:
            if os.path.exists(trial.run_dir):  # started, killed before it saved its flags
                argv.append("--overwrite")
            self._say(trial, "started")
        console = os.path.join(self.sweep.sweep_dir, CONSOLE_DIR, f"{trial.name}.txt")
        with open(console, "a") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "harness.run", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which forwards it
            )
        self.running[process] = (trial, time.monotonic(), console)
        if self.stopped_by:  # the signal came while it was starting
            process.send_signal(self.stopped_by)

    def _finished(self, process: subprocess.Popen) -> None:
        trial, started, console = self.running.pop(process)
        seconds = time.monotonic() - started
        trial.seconds += seconds
        code = process.returncode
        if code in (130, 143):
            trial.status = INTERRUPTED
            self._say(
                trial, f"interrupted after epoch {len(trial.history()['epoch'])}: checkpointed"
            )
            return
        self.done += 1
        if code != 0:
            trial.status = FAILED
            trial.error = _last_error(console) or f"exit status {code}"
            self._say(trial, f"failed: {trial.error} (see {console})")
            return
        trial.status = sweep_table.state(trial)
        value, epoch = trial.best()
        figure = (
            "no epoch" if value is None else f"{trial.config.monitor} {value:.4f} (epoch {epoch})"
        )
        self._say(trial, f"{trial.status}: {figure} in {seconds:.1f} s")

    def _say(self, trial: Trial, what: str) -> None:
        print(f"[{self.done}/{len(self.sweep.trials)}] {trial.name} {what}", flush=True)


def _last_error(console: str) -> str:
    with open(console) as f:
        errors = [line.strip() for line in f if line.startswith("harness: error:")]
    return errors[-1].removeprefix("harness: error: ") if errors else ""


def write_experiment(sweep: Sweep) -> None:
    """Writes the HParams experiment config at the sweep folder's root (its "." run):
    the swept flags with their domains, and the metrics."""
    if glob.glob(os.path.join(glob.escape(sweep.sweep_dir), "events.out.tfevents.*")):
        return  # written by an earlier invocation of the same sweep
    history = next((t.history() for t in sweep.trials if t.history()["epoch"]), None)
    if history is None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with run_lib.stderr_silenced():  # TF's C++ start-up lines
        import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    from harness.callbacks import run_info

    # The swept flags only: every other hyperparameter is the same in every trial.
    hparam_list = [
        hparams_api.HParam(dimension.name, _domain(dimension, hparams_api))
        for dimension in sweep.dimensions
    ]
    monitor = sweep.trials[0].config.monitor
    keys = sorted(
        (k for k in history if k not in ("epoch", monitor)), key=lambda k: not k.startswith("val_")
    )
    with tf.summary.create_file_writer(sweep.sweep_dir).as_default():
        hparams_api.hparams_config(
            hparams=hparam_list, metrics=[run_info.metric(key) for key in [monitor, *keys]]
        )


def _domain(dimension: sweep_space.Dimension, hparams_api):
    kind = dimension.kind
    if dimension.is_range:
        if kind is int:
            return hparams_api.IntInterval(int(dimension.low), int(dimension.high))
        return hparams_api.RealInterval(float(dimension.low), float(dimension.high))
    if kind is bool:
        return hparams_api.Discrete(
            sorted({value.lower() in ("true", "1") for value in dimension.values})
        )
    convert = kind if kind in (int, float) else str
    return hparams_api.Discrete([convert(value) for value in dimension.values])


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: all options are --flags")
    sweep = plan()
    os.makedirs(os.path.join(sweep.sweep_dir, CONSOLE_DIR), exist_ok=True)
    rundir.write_json(os.path.join(sweep.sweep_dir, SWEEP_FILE), sweep.record)
    _add_earlier_seconds(sweep)
    stopped_by = Runner(sweep, FLAGS.parallel).run()
    rows = sweep_table.results(sweep.trials)
    rundir.write_json(os.path.join(sweep.sweep_dir, RESULTS_FILE), rows)
    if stopped_by:
        command = shlex.join([sys.executable, "-m", "harness.sweep", *sys.argv[1:]])
        print(f"harness: sweep interrupted; resume with: {command}", file=sys.stderr)
        return 128 + stopped_by
    write_experiment(sweep)
    print("\n" + sweep_table.table(rows, [d.name for d in sweep.dimensions]) + "\n")
    if rows[0]["best"] is None:
        print(f"best trial: none (no trial recorded {rows[0]['monitor']})")
    else:
        print(f"best trial: {rows[0]['run_dir']}")
    print(f"See it in TensorBoard: {report.tensorboard_command(sweep.sweep_dir)}")
    failed = [row["trial"] for row in rows if row["status"] == FAILED]
    if failed:
        trials = "trial" if len(failed) == 1 else "trials"
        print(
            f"harness: error: {len(failed)} {trials} failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


def _add_earlier_seconds(sweep: Sweep) -> None:
    """Carries each trial's training seconds over from the previous invocation."""
    path = os.path.join(sweep.sweep_dir, RESULTS_FILE)
    if os.path.exists(path):
        earlier = {row["trial"]: row["seconds"] for row in rundir.read_json(path)}
        for trial in sweep.trials:
            trial.seconds = earlier.get(trial.name, 0.0)


def _main_or_exit(argv) -> None:
    try:
        sys.exit(main(argv))
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:  # before the trials start or after they end: nothing to checkpoint
        print("harness: sweep interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    app.run(_main_or_exit, flags_parser=run_lib.parse_flags)  # FLAGS is the same object
