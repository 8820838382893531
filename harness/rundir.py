"""The run directory: where a run's event files, checkpoints and records live.

`<logdir>/<run_name>/` holds `train/` and `validation/` event files, `checkpoints/`,
`best.keras`, `flags.json` (the run's config, the latest when resumed), the same
flags as an absl flagfile `flags.txt` (`--flagfile=<run>/flags.txt --run_name=NEW`
reruns it), `history.json` (per-epoch logs) and `.harness.lock`, the claim of the
process writing it (see `Claim`).
Nothing here overwrites an existing run unless the user said `--overwrite`.
"""

import dataclasses
import datetime
import errno
import fcntl
import glob
import json
import os
import shutil

from harness import catalog, hparams, options
from harness.callbacks import files
from harness.config import Config
from harness.errors import UsageError

FLAGS_FILE = "flags.json"
FLAGFILE = "flags.txt"
# Flags a flagfile leaves out: they name this run and how it was started, not what it trains.
_NOT_RERUN = ("run_name", "resume", "overwrite")
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
BEST_MODEL_FILE = "best.keras"
LOCK_FILE = ".harness.lock"
# Flags a resumed run must share with the saved run: they define the model,
# the data or the order of the batches.
RESUME_MUST_MATCH = (
    "model",
    "dataset",
    "num_words",
    "max_len",
    "num_classes",
    "num_examples",
    "seed",
    "batch_size",
    "optimizer",
    "steps_per_epoch",
    "validation_split",
)


def default_run_name(config: Config, now: datetime.datetime) -> str:
    """`<model>-<mode>[-<what differs>]-<timestamp>`: an import path contributes its
    function name, and the options changed from their defaults are named (e.g.
    'lr0.003-bs64'), so runs compared side by side can be told apart. The
    microseconds keep the names of runs started in the same second apart."""
    model = config.model.rpartition(":")[2]
    differs = hparams.differences(config)
    return "-".join(filter(None, (model, config.mode, differs, f"{now:%Y%m%d-%H%M%S-%f}")))


def check_logdir(logdir: str) -> None:
    """Raises UsageError unless `logdir` is, or can be created as, a writable folder.

    Part of `plan`, so an unusable --logdir fails before TensorFlow is imported;
    it only looks, never creates.
    """
    existing = logdir
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    existing = existing or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--logdir={logdir!r} cannot be written ({existing} is not a "
            "writable folder): choose another --logdir"
        )


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
            flags, the log directory cannot be written, or the run directory
            is not a folder directly inside it (e.g. a symlink out of it).
    """
    if config.resume and not config.run_name:  # also caught by Config.validate()
        raise UsageError(
            "--resume needs --run_name naming the run to continue "
            f"(a folder under --logdir={config.logdir})"
        )
    run_name = config.run_name or default_run_name(config, datetime.datetime.now())
    run_dir = os.path.join(config.logdir, run_name)
    check_logdir(config.logdir)
    _check_inside_logdir(config.logdir, run_dir)
    exists = _is_run(run_dir)
    if config.resume:
        if not os.path.isfile(os.path.join(run_dir, FLAGS_FILE)):
            raise UsageError(
                f"--resume: {run_dir} is no run (no {FLAGS_FILE}): there are no "
                "checkpoints to resume from; start it without --resume"
            )
        _check_same_flags(config, run_dir)
        epochs = recorded_epochs(run_dir)
        if epochs and not glob.glob(
            os.path.join(glob.escape(run_dir), CHECKPOINT_DIR, "ckpt-*.index")
        ):
            raise UsageError(
                f"--resume: no usable checkpoint in {run_dir}, although its "
                f"{HISTORY_FILE} records {epochs} epochs; start a new run "
                "(another --run_name) without --resume"
            )
    elif exists and not config.overwrite:
        raise _exists_error(run_dir)
    return run_dir


class Claim:
    """This process's hold on a run directory, so that no second process writes into it.

    An exclusive `flock` on the run's lock file: the kernel drops it when the
    process ends, however it ends (kill -9 too), so a stale claim never blocks.
    The file stays empty and is never rewritten, so a refused run changes nothing.
    """

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise UsageError(
                f"run directory {run_dir} is in use by another process that "
                "is writing it: wait for that run to end, or choose another "
                "--run_name"
            ) from None

    def release(self) -> None:
        """Drops the claim (closing the file releases the lock)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def create(config: Config, run_dir: str) -> Claim:
    """Claims the run directory, creates (or, with --overwrite, empties) it and saves
    the flags. The checks of `plan` are repeated under the claim: a run started at
    the same time with the same name may have taken the directory since.

    Returns:
        The claim: keep it while the run writes, `release()` it when the run ends.

    Raises:
        UsageError: another live process holds the run directory, a run appeared
            there since `plan`, or the folder cannot be written.
    """
    claim = None
    try:
        os.makedirs(run_dir, exist_ok=True)
        claim = Claim(run_dir)
        if config.overwrite:
            _empty(run_dir)
        elif not config.resume and _is_run(run_dir):
            raise _exists_error(run_dir)
        files.remove_temporaries(run_dir)  # left by a process killed mid-write
        if not config.resume:  # a resumed run's flags are saved once it has restored
            save_flags(config, run_dir)
    except BaseException as error:
        if claim:
            claim.release()
        if isinstance(error, OSError):
            raise _write_error(config, run_dir, error) from None
        raise
    return claim


def _is_run(run_dir: str) -> bool:
    """Whether `run_dir` holds anything but a claim (a run killed before writing
    anything leaves only its lock file)."""
    return os.path.isdir(run_dir) and any(name != LOCK_FILE for name in os.listdir(run_dir))


def _empty(run_dir: str) -> None:
    """Deletes what `run_dir` holds but the lock file (--overwrite, under the claim)."""
    for entry in os.scandir(run_dir):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _check_inside_logdir(logdir: str, run_dir: str) -> None:
    """Refuses a run directory that resolves anywhere but directly inside --logdir
    ('..', a symlink out of it), so that --overwrite deletes nothing else."""
    resolved = os.path.realpath(run_dir)
    if os.path.dirname(resolved) != os.path.realpath(logdir):
        raise UsageError(
            f"run directory {run_dir} resolves to {resolved}, not to a folder "
            f"directly inside --logdir={logdir!r}: choose another --run_name"
        )


def _exists_error(run_dir: str) -> UsageError:
    return UsageError(
        f"run directory {run_dir} already exists: pass --resume to "
        "continue it, --overwrite to replace it, or another --run_name"
    )


def _write_error(config: Config, run_dir: str, error: OSError) -> UsageError:
    """The message for a run directory that cannot be written, blaming the right flag."""
    if error.errno == errno.ENAMETOOLONG:
        return UsageError(
            f"run directory {run_dir} is a name the file system rejects "
            f"({error.strerror}): choose a shorter --run_name or --logdir"
        )
    return UsageError(
        f"--logdir={config.logdir!r} cannot be written ({error.strerror}: "
        f"{run_dir}); choose another --logdir"
    )


def save_flags(config: Config, run_dir: str) -> None:
    """Saves the run's flags as `flags.json`, and as the flagfile `flags.txt` that reruns it."""
    write_json(os.path.join(run_dir, FLAGS_FILE), dataclasses.asdict(config))
    files.write_text(os.path.join(run_dir, FLAGFILE), flagfile(config, run_dir))


def flagfile(config: Config, run_dir: str) -> str:
    """The absl flagfile of `config`'s flags, less those naming the run; a model or data
    given to `harness.train` is a comment (it has no flag)."""
    lines = [
        f"# The flags of run {os.path.basename(run_dir)}; train it again as a new run with",
        f"# python -m harness.run --flagfile={os.path.join(run_dir, FLAGFILE)} --run_name=NEW",
    ]
    for field in dataclasses.fields(config):
        line = options.flagfile_line(field, getattr(config, field.name))
        if line and field.name not in _NOT_RERUN:
            given = str(getattr(config, field.name)).startswith(catalog.GIVEN_PREFIX)
            lines.append(f"# {line}  (given to harness.train: pass it again)" if given else line)
    return "\n".join(lines) + "\n"


def write_json(path: str, value) -> None:
    """Writes `value` as JSON atomically: a crash never leaves a half-written file."""
    files.write_text(path, json.dumps(value, indent=2))


def read_json(path: str):
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


def recorded_epochs(run_dir: str) -> int:
    """The epochs the run's history.json records (0 if it has none yet).

    Raises:
        UsageError: history.json is not a history the harness wrote (truncated,
            edited), so resuming would build on a record it cannot trust.
    """
    return len(read_history(run_dir)["epoch"])


def read_history(run_dir: str, context: str = "--resume") -> dict:
    """The run's per-epoch history.json ({"epoch": []} before its first epoch).

    Raises:
        UsageError: history.json is not a history the harness wrote (truncated,
            edited); `context` starts the message.
    """
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return {"epoch": []}
    history = _read_record(path, "history", context)
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or any(
        not isinstance(values, list) or len(values) != len(epochs) for values in history.values()
    ):
        raise UsageError(
            f"{context}: {path} is damaged (not the per-epoch lists the harness "
            "writes); restore it from a backup, or start a new run"
        )
    return history


def _read_record(path: str, what: str, context: str = "--resume") -> dict:
    """A JSON object the harness wrote, or a UsageError saying it is damaged."""
    try:
        value = read_json(path)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{context}: {path} is unreadable ({error}), so the run's {what} is "
            "unknown; restore it from a backup, or start a new run"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{context}: {path} is damaged (a JSON {type(value).__name__}, not "
            f"an object), so the run's {what} is unknown; restore it from a "
            "backup, or start a new run"
        )
    return value


def _check_same_flags(config: Config, run_dir: str) -> None:
    saved = _read_record(os.path.join(run_dir, FLAGS_FILE), "flags")
    for name in RESUME_MUST_MATCH:
        if saved.get(name) != getattr(config, name):
            raise UsageError(
                f"--resume: --{name}={getattr(config, name)!r} contradicts "
                f"the saved run's {saved.get(name)!r}; resume with the same "
                f"--{name} or start a new run"
            )
