"""Choosing devices before anything touches them: GPUs, memory growth, memory
limit, and the CPU's thread pools.

The tutorials begin with `tf.config.set_visible_devices` and
`tf.config.experimental.set_memory_growth`; here they are flags, applied once,
before the first tensor is created. On a machine without a GPU the defaults are
accepted and the run says it trains on the CPU; naming a GPU is an error there.
The thread counts (`tf.config.threading`) are fixed the same way: TensorFlow
reads them once, when it starts.
"""

from collections.abc import Sequence

import tensorflow as tf

from harness.errors import UsageError


def configure(gpus: Sequence[int] | None, memory_growth: bool, memory_limit_mb: int) -> str:
    """Applies the GPU flags; returns a line saying which devices the run uses.

    Args:
        gpus: indices of the GPUs to use; None = all.
        memory_growth: allocate GPU memory as needed rather than all at once.
        memory_limit_mb: cap each GPU's memory (a logical device); 0 = no cap.

    Raises:
        UsageError: a named GPU does not exist, or the devices were already
            initialised differently in this process.
    """
    physical = tf.config.list_physical_devices("GPU")
    wanted = list(range(len(physical))) if gpus is None else list(gpus)
    missing = [index for index in wanted if not 0 <= index < len(physical)]
    if missing:
        have = f"GPUs 0-{len(physical) - 1}" if physical else "no GPU"
        raise UsageError(
            f"--gpus={','.join(map(str, gpus))}: this machine has {have}; "
            "drop --gpus to use all (or the CPU)"
        )
    if not physical:
        return "harness: no GPU found: training on the CPU"
    chosen = [physical[index] for index in wanted]
    try:
        tf.config.set_visible_devices(chosen, "GPU")
        for device in chosen:
            if memory_limit_mb:
                tf.config.set_logical_device_configuration(
                    device, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
                )
            elif memory_growth:
                tf.config.experimental.set_memory_growth(device, True)
    except RuntimeError as error:  # devices already initialised in this process
        raise UsageError(
            f"GPU settings could not be applied ({error}); set them before "
            "TensorFlow first uses a device"
        ) from None
    names = ", ".join(device.name.replace("/physical_device:", "") for device in chosen)
    limit = (
        f", {memory_limit_mb} MB each"
        if memory_limit_mb
        else (", memory growth on" if memory_growth else "")
    )
    return f"harness: training on {names}{limit}"


def configure_threads(intra_op: int, inter_op: int) -> str | None:
    """Sets TensorFlow's thread pools; returns a line saying so, or None if both
    are 0 (TensorFlow's own choice, the number of cores, is kept).

    Args:
        intra_op: threads one op may split its work over; 0 = TensorFlow's choice.
        inter_op: ops that may run at once; 0 = TensorFlow's choice.

    Raises:
        UsageError: TensorFlow already started in this process with other counts.
    """
    threading = tf.config.threading
    for flag, wanted, get, set_ in (
        (
            "intra_op_threads",
            intra_op,
            threading.get_intra_op_parallelism_threads,
            threading.set_intra_op_parallelism_threads,
        ),
        (
            "inter_op_threads",
            inter_op,
            threading.get_inter_op_parallelism_threads,
            threading.set_inter_op_parallelism_threads,
        ),
    ):
        if wanted and get() != wanted:
            try:
                set_(wanted)
            except RuntimeError:  # TensorFlow has started: its pools are fixed
                raise UsageError(
                    f"--{flag}={wanted} could not be applied: TensorFlow already "
                    f"runs in this process with {get() or 'its own choice of'} "
                    "threads; set the thread counts before TensorFlow first "
                    "runs (as the command line does)"
                ) from None
    if not (intra_op or inter_op):
        return None
    choice = "TensorFlow's choice"
    return (
        f"harness: CPU threads: intra-op {intra_op or choice} (threads per op), "
        f"inter-op {inter_op or choice} (ops at once)"
    )
