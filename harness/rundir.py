"""The run directory: where a run's event files, checkpoints and records live.

`<logdir>/<run_name>/` holds `train/` and `validation/` event files, `checkpoints/`,
`best.keras`, `flags.json` (the run's config, the latest when resumed) and
`history.json` (per-epoch logs).
Nothing here overwrites an existing run unless the user said `--overwrite`.
"""

import dataclasses
import datetime
import json
import os
import shutil

from harness.config import Config, check_logdir
from harness.errors import UsageError

FLAGS_FILE = "flags.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
BEST_MODEL_FILE = "best.keras"
# Flags a resumed run must share with the saved run: they define the model,
# the data or the order of the batches.
RESUME_MUST_MATCH = ("model", "dataset", "num_words", "max_len", "num_classes",
                     "num_examples", "seed", "batch_size", "optimizer", "steps_per_epoch")


def default_run_name(config: Config, now: datetime.datetime) -> str:
    """`<model>-<mode>-<timestamp>`; an import path contributes its function name."""
    model = config.model.rpartition(":")[2]
    return f"{model}-{config.mode}-{now:%Y%m%d-%H%M%S}"


def path(config: Config) -> str:
    """`<logdir>/<run_name>` (a new name from the time when --run_name is unset)."""
    run_name = config.run_name or default_run_name(config, datetime.datetime.now())
    return os.path.join(config.logdir, run_name)


def plan(config: Config) -> str:
    """Checks what `config` asks of the run directory, without writing anything.

    Returns:
        The run directory's path.

    Raises:
        UsageError: the run exists and neither --resume nor --overwrite was
            given, --resume has nothing to resume or contradicts the saved
            flags, or the log directory cannot be written.
    """
    if config.resume and not config.run_name:  # also caught by Config.validate()
        raise UsageError("--resume needs --run_name naming the run to continue "
                         f"(a folder under --logdir={config.logdir})")
    run_name = config.run_name or default_run_name(config, datetime.datetime.now())
    run_dir = os.path.join(config.logdir, run_name)
    check_logdir(config.logdir)
    exists = os.path.isdir(run_dir) and bool(os.listdir(run_dir))
    if config.resume:
        if not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR)):
            raise UsageError(f"--resume: {run_dir} has no checkpoints to resume from; "
                             "start it without --resume")
        _check_same_flags(config, run_dir)
    elif exists and not config.overwrite:
        raise UsageError(f"run directory {run_dir} already exists: pass --resume to "
                         "continue it, --overwrite to replace it, or another --run_name")
    return run_dir


def create(config: Config, run_dir: str) -> None:
    """Creates (or, with --overwrite, replaces) the run directory and saves the flags.

    Raises:
        UsageError: the folder cannot be written (permissions, a full disk, ...).
    """
    try:
        if config.overwrite and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        if not config.resume:  # a resumed run's flags are saved once it has restored
            save_flags(config, run_dir)
    except OSError as error:
        raise UsageError(f"--logdir={config.logdir!r} cannot be written ({error.strerror}: "
                         f"{run_dir}); choose another --logdir") from None


def save_flags(config: Config, run_dir: str) -> None:
    """Saves the run's flags as `flags.json`."""
    write_json(os.path.join(run_dir, FLAGS_FILE), dataclasses.asdict(config))


def write_json(path: str, value) -> None:
    """Writes `value` as JSON atomically: a crash never leaves a half-written file."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(temporary, path)


def read_json(path: str):
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


def _check_same_flags(config: Config, run_dir: str) -> None:
    path = os.path.join(run_dir, FLAGS_FILE)
    try:
        saved = read_json(path)
    except (OSError, ValueError):
        raise UsageError(f"--resume: {path} is missing or unreadable, so the run's "
                         "flags are unknown; start a new run instead") from None
    for name in RESUME_MUST_MATCH:
        if saved.get(name) != getattr(config, name):
            raise UsageError(f"--resume: --{name}={getattr(config, name)!r} contradicts "
                             f"the saved run's {saved.get(name)!r}; resume with the same "
                             f"--{name} or start a new run")
