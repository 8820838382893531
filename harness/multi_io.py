"""The multi-input, multi-output task of Keras's functional-API guide.

Tickets with a title, a body and tags go in; a priority (is it urgent?) and a
department come out, with one loss per output weighted 1.0 and 0.2 by default.
Everything the task needs lives here: the model, its offline synthetic data
(whose targets really depend on the inputs), and its losses and metrics.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from harness import data, task
from harness.config import MULTI_IO_OUTPUTS

INPUTS = ("title", "body", "tags")
OUTPUTS = MULTI_IO_OUTPUTS
DEFAULT_LOSS_WEIGHTS = {"priority": 1.0, "department": 0.2}
NUM_DEPARTMENTS = 4
NUM_TAGS = 12
URGENT_TAGS = (0, 1)  # a ticket is urgent when it carries one of these tags
URGENT_WORD = 3  # ... and its title starts with this word twice


def title_length(max_len: int) -> int:
    """Titles are a tenth of the body's length (at least 8 tokens)."""
    return max(8, max_len // 10)


def build(max_len: int, num_departments: int, num_words: int) -> keras.Model:
    """Title and body embeddings through LSTMs, concatenated with the tags, then
    a sigmoid priority head and a softmax department head."""
    title = keras.Input(shape=(title_length(max_len),), dtype="int32", name="title")
    body = keras.Input(shape=(max_len,), dtype="int32", name="body")
    tags = keras.Input(shape=(NUM_TAGS,), name="tags")
    title_features = layers.GlobalMaxPool1D()(
        layers.Conv1D(16, 3, activation="relu")(layers.Embedding(num_words, 16)(title))
    )
    body_features = layers.GlobalMaxPool1D()(
        layers.Conv1D(32, 5, activation="relu")(layers.Embedding(num_words, 16)(body))
    )
    tag_features = layers.Dense(16, activation="relu")(tags)
    features = layers.Concatenate()([title_features, body_features, tag_features])
    priority = layers.Dense(1, activation="sigmoid", name="priority", dtype="float32")(features)
    department = layers.Dense(
        num_departments, activation="softmax", name="department", dtype="float32"
    )(features)
    return keras.Model(
        {"title": title, "body": body, "tags": tags},
        {"priority": priority, "department": department},
        name="multi_io",
    )


def synthetic(
    *, num_examples: int | None, num_words: int, max_len: int, num_departments: int, seed: int
) -> data.Splits:
    """Tickets whose department is carried by keywords in the title and body (as in
    the single-input synthetic data) and whose priority is set by urgent tags (an
    urgent ticket's title also says so, with the word URGENT_WORD)."""
    tokens = data.synthetic(
        num_examples=num_examples,
        num_words=num_words,
        max_len=max_len + title_length(max_len),
        num_classes=num_departments,
        seed=seed,
    )
    rng = np.random.default_rng(seed + 1)

    def tickets(x: np.ndarray, y: np.ndarray):
        tags = (rng.random((len(y), NUM_TAGS)) < 0.15).astype(np.float32)
        urgent = tags[:, URGENT_TAGS].max(axis=1)
        title = x[:, -title_length(max_len) :].copy()
        title[urgent == 1, :2] = URGENT_WORD
        inputs = {"title": title, "body": x[:, :max_len], "tags": tags}
        return inputs, {"priority": urgent[:, None], "department": y}

    x_train, y_train = tickets(tokens.x_train, tokens.y_train)
    x_val, y_val = tickets(tokens.x_val, tokens.y_val)
    words = tokens.words[:URGENT_WORD] + ("<urgent>",) + tokens.words[URGENT_WORD + 1 :]
    return data.Splits(x_train, y_train, x_val, y_val, num_departments, words=words)


def own_run(config) -> tuple:
    """(the tickets, the Tickets task) that --model=multi_io trains on, as `config`'s
    --num_examples, --num_words, --max_len, --num_classes (departments), --loss_weights
    and --seed say."""
    tickets = synthetic(
        num_examples=config.num_examples,
        num_words=config.num_words,
        max_len=config.max_len,
        num_departments=config.classes,
        seed=config.seed,
    )
    return tickets, Tickets(config.classes, dict(config.loss_weights))


def compile_args(
    num_departments: int, metric_names: tuple, loss_weights: dict
) -> tuple[dict, list]:
    """`model.compile` arguments and the log keys they produce.

    Each output gets its loss and weight, and each requested metric (default:
    accuracy) on every output it applies to; Keras logs them as
    `<output>_<metric>`, the unweighted losses as `<output>_loss`.

    Raises:
        ValueError: a metric is unknown or applies to neither output.
    """
    heads = {"priority": 2, "department": num_departments}
    names = tuple(metric_names) or ("accuracy",)
    metrics = {output: [] for output in heads}
    for name in names:
        if name not in task.METRICS:
            raise ValueError(
                f"--metrics: unknown metric {name!r}; choose from {', '.join(task.METRICS)}"
            )
        outputs = [output for output, classes in heads.items() if task.applies(name, classes)]
        if not outputs:
            raise ValueError(
                f"--metrics: {name!r} applies to neither output of multi_io; "
                f"choose from {', '.join(task.METRICS)}"
            )
        for output in outputs:
            metrics[output] += task.metrics(heads[output], (name,))
    keys = [
        "loss",
        *(f"{output}_loss" for output in heads),
        *(f"{output}_{metric.name}" for output in heads for metric in metrics[output]),
    ]
    args = {
        "loss": {output: task.loss(classes) for output, classes in heads.items()},
        "loss_weights": {**DEFAULT_LOSS_WEIGHTS, **loss_weights},
        "metrics": metrics,
    }
    return args, keys


class Tickets(task.Task):
    """The tickets task: a binary priority and a softmax over the departments, each
    output with its own loss, weighted."""

    def __init__(self, num_departments: int, loss_weights: dict) -> None:
        self.num_departments = num_departments
        self.loss_weights = loss_weights

    def describe(self) -> str:
        return f"tickets: priority and {self.num_departments} departments"

    def compile_args(self, metric_names: Sequence[str]) -> tuple[dict, list]:
        return compile_args(self.num_departments, tuple(metric_names), self.loss_weights)

    def outputs(self) -> dict:
        return {"priority": 2, "department": self.num_departments}

    def output_spec(self) -> str:
        return f"outputs priority [batch, 1] and department [batch, {self.num_departments}]"

    def check_outputs(self, outputs, batch: int) -> str | None:
        wanted = {"priority": (batch, 1), "department": (batch, self.num_departments)}
        shapes = (
            {name: tuple(tf.convert_to_tensor(o).shape) for name, o in outputs.items()}
            if isinstance(outputs, dict)
            else None
        )
        return None if shapes == wanted else f"does not give the {self.output_spec()}"
