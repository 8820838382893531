"""Importing and calling the user's own code (a `--model` builder, a `--dataset`
function): errors in it are shown with the frames of that code, then one line."""

import importlib
import inspect
import os
import sysconfig
import traceback
from collections.abc import Callable
from typing import Any

from harness.errors import UsageError, UserCodeError


def import_function(flag: str, path: str, what: str) -> Callable:
    """The function `package.module:function` names; `what` says what it must be
    (e.g. 'a builder (input_spec, task) -> keras.Model') in the messages.

    Raises:
        UsageError: it does not import or is not callable.
        UserCodeError: the user's module raised while importing.
    """
    module_name, _, function_name = path.partition(":")
    hint = f"give 'package.module:function' of {what} on PYTHONPATH"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"--{flag}={path!r} does not import ({type(error).__name__}: {error}); {hint}"
        ) from None
    except Exception as error:  # the user's module itself raised while importing
        raise UserCodeError(
            f"--{flag}={path!r}: importing {module_name} raised "
            f"{type(error).__name__}: {one_line(error)} (its traceback is above)",
            user_frames(error),
        ) from error
    try:
        function = getattr(module, function_name)
    except AttributeError as error:
        raise UsageError(
            f"--{flag}={path!r} does not import (AttributeError: {error}); {hint}"
        ) from None
    if not callable(function):
        raise UsageError(f"--{flag}={path!r} names a {type(function).__name__}, not {what}")
    return function


def call(where: str, function: Callable, args: tuple, *, what: str, exit_code: int = 1) -> Any:
    """`function(*args)`; an error in the user's code becomes a UserCodeError carrying
    its frames (exit status `exit_code`), an error in a library function a UsageError:
    it is not `what` (e.g. 'a model builder') that `where` (e.g. "--model='m:f'") takes."""
    try:
        return function(*args)
    except Exception as error:  # the user's code: any error, shown with its frames
        if not is_user_code(function):  # e.g. os.path:join, a library function
            raise UsageError(
                f"{where} is not {what}: calling it raised "
                f"{type(error).__name__}: {one_line(error)}"
            ) from None
        raised = UserCodeError(
            f"{where}: the {what.split()[-1]} raised {type(error).__name__}: "
            f"{one_line(error)} (its traceback is above)",
            user_frames(error),
        )
        raised.exit_code = exit_code
        raise raised from error


def parameters(function: Callable) -> list | None:
    """The names of `function`'s parameters (None if Python cannot tell)."""
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # some built-ins have none: calling them tells
        return None


def is_user_code(function: Callable) -> bool:
    """Whether `function` is the user's own Python code (not a built-in, nor a function
    of the standard library or an installed package)."""
    try:
        path = inspect.getfile(inspect.unwrap(function))  # a function's or a class's file
    except TypeError:  # built-in
        return False
    if path.startswith("<"):  # frozen modules (os.path), exec'd strings
        return False
    path = os.path.realpath(path)
    libraries = {
        os.path.realpath(folder)
        for key, folder in sysconfig.get_paths().items()
        if key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    return not any(path.startswith(folder + os.sep) for folder in libraries)


def user_frames(error: BaseException) -> str:
    """`error`'s traceback from the first frame that is not the harness's own."""
    tb = error.__traceback__
    # The harness's frames, then (for an import) importlib's, lead to the user's code.
    while tb is not None and (
        os.path.dirname(tb.tb_frame.f_code.co_filename) == _HARNESS_DIR
        or tb.tb_frame.f_code.co_filename == importlib.__file__
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def one_line(error: BaseException) -> str:
    """The error's message on one line (Keras's are often several), at most 300 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 300 else text[:297] + "..."


_HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))
