"""Reopen a finished or interrupted run: its config, data, task and compiled model,
with the weights of one of its checkpoints (for `harness.evaluate` and `harness.predict`).

`locate` checks the run on disk without TensorFlow, so a bad --run_name or --checkpoint
is one line before TensorFlow loads; `open_run` rebuilds the data and model exactly as
training did (the data too: the model's inputs and the class names come from it).
`cli` is the entrypoints' shared frame: their flags, and errors as one line, exit 2.
"""

import dataclasses
import glob
import os
import re
import sys
import typing
from collections.abc import Callable

from absl import flags

from harness import catalog, rundir
from harness.config import Config
from harness.errors import HarnessError, UsageError

BEST = "best"
LATEST = "latest"
_CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Located:
    """A run on disk and the checkpoint asked for (`path`: best.keras or a checkpoint prefix)."""

    run_dir: str
    config: Config
    checkpoint: str  # best, latest or ckpt-N, as asked
    path: str


@dataclasses.dataclass
class SavedRun:
    """A reopened run: its data and compiled model with the checkpoint's weights."""

    located: Located
    path: str  # the file or checkpoint its weights came from
    splits: typing.Any  # data.RunData
    task: typing.Any  # task.Task
    model: typing.Any  # keras.Model
    global_step: int
    epoch: float  # epochs trained at the checkpoint (a fraction mid-epoch)

    @property
    def config(self) -> Config:
        return self.located.config


def define_flags(flag_values: flags.FlagValues) -> None:
    """The flags that name a run and one of its checkpoints."""
    flags.DEFINE_string("logdir", "logs", "The folder holding the run", flag_values=flag_values)
    flags.DEFINE_string(
        "run_name", None, "The run (a folder under --logdir)", flag_values=flag_values
    )
    flags.DEFINE_string(
        "checkpoint",
        BEST,
        "best (best.keras), latest (the newest checkpoint) or ckpt-N (the one at step N)",
        flag_values=flag_values,
    )


def locate(logdir: str, run_name: str | None, checkpoint: str) -> Located:
    """The run `run_name` under `logdir` and the file of its `checkpoint`.

    Raises:
        UsageError: no such run, a run given objects the command line cannot give
            again, or no such checkpoint.
    """
    if not run_name:
        raise UsageError(f"--run_name is required: name a run under --logdir={logdir}")
    run_dir = os.path.join(logdir, run_name)
    flags_path = os.path.join(run_dir, rundir.FLAGS_FILE)
    if not os.path.isdir(run_dir):
        raise UsageError(f"there is no run {run_dir}: --run_name names a folder under --logdir")
    if not os.path.isfile(flags_path):
        raise UsageError(f"{run_dir} is no run of the harness (it has no {rundir.FLAGS_FILE})")
    config = _saved_config(flags_path)
    for name in ("model", "dataset"):
        value = getattr(config, name)
        if value.startswith(catalog.GIVEN_PREFIX):
            raise UsageError(
                f"run {run_dir} trained a {name} given to harness.train ({value}); "
                "the command line cannot give it again: reopen it in Python"
            )
    return Located(run_dir, config, checkpoint, _checkpoint_path(run_dir, checkpoint))


def _saved_config(path: str) -> Config:
    """The run's validated `Config` from its flags.json (lists back to tuples)."""
    try:
        saved = rundir.read_json(path)
        known = {field.name for field in dataclasses.fields(Config)}  # another version's
        config = Config(**{k: _tuples(v) for k, v in saved.items() if k in known})
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    return config.validate()


def _tuples(value):
    """JSON's lists as the tuples a Config holds."""
    return tuple(map(_tuples, value)) if isinstance(value, list) else value


def _checkpoint_path(run_dir: str, checkpoint: str) -> str:
    """The file (best.keras) or checkpoint prefix that `checkpoint` names."""
    prefixes = checkpoints(run_dir)
    listed = ", ".join(os.path.basename(p) for p in prefixes) or "none"
    if checkpoint == BEST:
        path = os.path.join(run_dir, rundir.BEST_MODEL_FILE)
        if not os.path.isfile(path):
            raise UsageError(
                f"run {run_dir} has no best model ({rundir.BEST_MODEL_FILE}: no epoch "
                f"finished yet); use --checkpoint=latest or a checkpoint (on disk: {listed})"
            )
        return path
    if checkpoint != LATEST and not _CHECKPOINT_NAME.match(checkpoint):
        raise UsageError(
            f"--checkpoint={checkpoint!r} is not allowed: use best, latest or ckpt-N "
            f"(on disk: {listed})"
        )
    if not prefixes:
        raise UsageError(f"run {run_dir} has no checkpoint (its {rundir.CHECKPOINT_DIR}/ is empty)")
    if checkpoint == LATEST:
        return prefixes[-1]
    path = os.path.join(run_dir, rundir.CHECKPOINT_DIR, checkpoint)
    if path not in prefixes:
        raise UsageError(f"run {run_dir} has no checkpoint {checkpoint}: use one of {listed}")
    return path


def checkpoints(run_dir: str) -> list:
    """The run's checkpoint prefixes by their index files, oldest first."""
    pattern = os.path.join(glob.escape(run_dir), rundir.CHECKPOINT_DIR, "ckpt-*.index")
    prefixes = [path[: -len(".index")] for path in glob.glob(pattern)]
    return sorted(prefixes, key=lambda prefix: int(prefix.rsplit("-", 1)[1]))


def open_run(located: Located, print_fn: Callable[[str], None] = print) -> SavedRun:
    """Rebuilds the run's data and compiled model as training did and loads the
    checkpoint's weights.

    Raises:
        UsageError: the data is gone, or the checkpoint cannot be read.
    """
    import keras
    import tensorflow as tf

    from harness import pipeline, training
    from harness.callbacks import lr_schedule
    from harness.callbacks.checkpoint import make_manager, restore_latest
    from harness.callbacks.epoch_state import EpochMetricsState

    config = located.config
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    splits, run_task = training.data_and_task(config, located.run_dir, None)
    model, _ = training.compiled_model(config, run_task, splits, None)
    steps_per_epoch = pipeline.steps_for(
        splits.train_size, config.batch_size, config.steps_per_epoch
    )
    manager = make_manager(  # builds the optimizer too: best.keras holds its step count
        model,
        os.path.join(located.run_dir, rundir.CHECKPOINT_DIR),
        config.keep_checkpoints,
        warn=print_fn,
        extra={
            "epoch_metrics": EpochMetricsState().saved,
            **lr_schedule.checkpointed(model.optimizer),
        },
    )
    path = located.path
    try:
        if located.checkpoint == BEST:
            model.load_weights(path)
        elif located.checkpoint == LATEST:  # a damaged newest one is skipped, with a warning
            path = restore_latest(manager, warn=print_fn)
            if path is None:
                raise ValueError("no checkpoint reads back whole")
        else:
            manager.checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, OSError, AssertionError, tf.errors.OpError) as error:
        raise UsageError(
            f"{located.path} cannot be read ({type(error).__name__}: {error}); "
            "choose another --checkpoint"
        ) from None
    step = int(model.optimizer.iterations.numpy())
    return SavedRun(located, path, splits, run_task, model, step, round(step / steps_per_epoch, 3))


def quiet_tensorflow() -> None:
    """Loads TensorFlow with its C++ start-up lines, info lines and Python warnings off."""
    from absl import logging

    from harness.run import stderr_silenced

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.WARNING)
    with stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the devices' start-up lines (cuInit without a GPU)


def cli(
    main: Callable[[flags.FlagValues], int], define: Callable[[flags.FlagValues], None], doc: str
) -> None:
    """Runs an entrypoint `main(flag_values)` on sys.argv: flags of its own (so that
    modules importing it define nothing), --help prints `doc` and them, and a bad flag or
    a HarnessError is one line on stderr and its exit status (2 for usage), never a traceback."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    define(flag_values)
    argv = sys.argv
    if {"-h", "--help", "--helpfull"} & set(argv[1:]):
        print(f"{doc}\n{flag_values.get_help()}")
        sys.exit(0)
    try:
        rest = flag_values(argv)
        if len(rest) > 1:
            raise UsageError(
                f"unexpected arguments {' '.join(rest[1:])!r}: all options are --flags"
            )
        flags.FLAGS.mark_as_parsed()  # absl logging's "before flag parsing" warning
        status = main(flag_values)
    except flags.Error as error:
        print(f"harness: error: {error} (see --help)", file=sys.stderr)
        sys.exit(2)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status)


def metrics_table(metrics: dict) -> str:
    """The metrics as two aligned columns."""
    width = max(map(len, metrics), default=0)
    return "\n".join(f"{name.ljust(width)}  {value:.6g}" for name, value in metrics.items())
