"""Distribution strategies: one device, all local devices, many machines, TPU.

The harness runs on TensorFlow's own engine, `tf.distribute`. `--batch_size`
is always the global batch. Only the chief writes anything that survives:
other workers write their summaries and checkpoints (which multi-worker
training needs them to write, as collective operations) into a temporary
folder that is deleted at the end.
"""

import json
import os

import tensorflow as tf

from harness.config import STRATEGIES
from harness.errors import UsageError

# What the user asked for, by the strategy's class name.
_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}


def make_strategy(name: str, cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """The strategy `--strategy=name` asks for (the loop was checked by Config).

    Args:
        name: one of STRATEGIES.
        cpu_replicas: with `mirrored` on a machine without GPUs, split the CPU
            into this many logical devices (0 = one replica per physical device).

    Raises:
        UsageError: the strategy cannot run here or with this loop.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_local_devices(cpu_replicas))
    if name == "multi_worker":
        _check_tf_config()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, TypeError, KeyError) as error:
            raise UsageError(f"TF_CONFIG is not valid for this cluster: {error}") from None
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise UsageError(
                f"--strategy=tpu: no TPU found ({type(error).__name__}); "
                "use --strategy=default or mirrored here"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"--strategy={name!r} is not allowed: use one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def describe(strategy: tf.distribute.Strategy) -> str | None:
    """A startup line for a non-default strategy."""
    if strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1:
        return None
    name = type(strategy).__name__
    return f"harness: {_NAMES.get(name, name)} with {strategy.num_replicas_in_sync} replicas"


def _local_devices(cpu_replicas: int) -> list:
    if tf.config.list_physical_devices("GPU"):
        return [device.name for device in tf.config.list_logical_devices("GPU")]
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
            )
        except RuntimeError:  # already configured in this process
            pass
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--strategy=multi_worker needs TF_CONFIG (the cluster and this "
            "worker's task) in the environment of every worker; see the README"
        )
    try:
        config = json.loads(text)
        config["cluster"], config["task"]["type"], config["task"]["index"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            'TF_CONFIG is not valid: it must be JSON like {"cluster": '
            '{"worker": ["host:port", ...]}, "task": {"type": "worker", '
            '"index": 0}}'
        ) from None
