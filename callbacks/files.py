"""Writing a run's files safely: whole or not at all, never through a planted link.

Every file the harness rewrites (flags, history, best model, purged event files)
goes through `atomic_write`: the content goes to a new temporary file with an
unpredictable name, created exclusively in the same folder, which is then renamed
over the target. A crash leaves the old file or the new one, never half of one;
a symlink planted at the target or at a temporary name is replaced or never
followed. A failed write raises `WriteFailed` naming the file, and leaves no
temporary file behind.
"""

import contextlib
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

TEMPORARY_SUFFIX = ".harness-tmp"


class WriteFailed(RuntimeError):
    """A run's file could not be written: a full disk, a read-only or deleted folder."""

    def __init__(self, path: str, error: BaseException) -> None:
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or error
        super().__init__(f"could not write {path} ({reason})")
        self.path = path


@contextlib.contextmanager
def write_errors(path: str) -> Iterator[None]:
    """Turns an I/O error of the block (Python's or TensorFlow's) into `WriteFailed`."""
    tf = sys.modules.get("tensorflow")  # no TensorFlow loaded: none of its errors either
    errors = (OSError, tf.errors.OpError) if tf else (OSError,)
    try:
        yield
    except errors as error:
        raise WriteFailed(path, error) from error


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Has `write(temporary_path)` fill a new file, then renames it to `path`.

    Args:
        path: the file to create or replace.
        write: writes the whole content to the path it is given (an empty file
            that exists already, created for this write alone).
        suffix: the temporary name's ending, for writers that need one (`.keras`).

    Raises:
        WriteFailed: the content or the rename could not be written.
    """
    folder, name = os.path.split(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{name}.", dir=folder or ".", suffix=TEMPORARY_SUFFIX + suffix
        )
        os.close(handle)
        os.chmod(temporary, 0o644)
        with write_errors(path):
            write(temporary)
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        raise WriteFailed(path, error) from error
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.remove(temporary)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically (see `atomic_write`)."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as f:
            f.write(text)

    atomic_write(path, write)


def remove_temporaries(folder: str) -> list:
    """Deletes the temporary files (and folders) a killed process left in `folder`."""
    left = glob.glob(os.path.join(glob.escape(folder), f".*{TEMPORARY_SUFFIX}*"))
    remove(left)
    return left


def remove(paths) -> None:
    """Deletes files and folders; one that is gone already or stays is no reason to stop."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
