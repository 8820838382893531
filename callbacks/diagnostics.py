"""Per-layer health every N epochs, the same in every loop.

`LayerHealth` writes to the run's `train/` event files, at step = 1-based
epoch, every `freq` epochs:

- `health/gradient_norm/<variable path>`: the L2 norm of each trainable
  variable's gradient on the fixed probe batch (inference mode, as the
  gradient histograms), and `health/gradient_norm`: their global norm,
  sqrt(sum of the squares);
- `health/update_ratio/<variable path>`: ||w_end - w_start|| / ||w_start||
  over the epoch, how far the epoch moved each trainable variable relative to
  its size;
- for a model whose layers form a graph (Sequential, functional):
  `health/activations/<layer name>`, a histogram of each layer's output on the
  probe batch, and `health/dead_relu/<layer name>`, for each layer that ends
  in a ReLU, the fraction of its units that are 0 for every example of the
  probe batch (a unit: one entry of the output's last axis).

Everything runs on the probe batch through functions compiled once; the
norms are computed in NumPy.
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .summary import probe_gradients, write_histogram

TRAIN = "train"
GRADIENT_NORM = "health/gradient_norm"
UPDATE_RATIO = "health/update_ratio"
ACTIVATIONS = "health/activations"
DEAD_RELU = "health/dead_relu"


class LayerHealth(keras.callbacks.Callback):
    """Writes gradient norms, update ratios, activations and dead ReLUs; see the
    module docstring.

    The update ratio compares the trainable weights at the epoch's end with a
    NumPy copy taken when the epoch begins; in a resumed run's first epoch that
    copy is taken at the resume point, so the ratio covers the steps after it.
    A variable that begins the epoch all zeros (a bias in the first epoch) has
    no size to compare with: its ratio is ||w_end - w_start|| / ||w_end||, 1 if
    it moved and 0 if not.

    A subclassed model's layers are not connected in a graph that can be
    re-entered: it gets one console line saying so, and gradient norms and
    update ratios only.

    Args:
        writer: `name -> tf.summary.SummaryWriter`, the run's writer per folder
            (`TensorBoardSummaries.writer`); everything goes to `writer("train")`.
        freq: write every this many epochs (0 = never).
        probe_batch: the fixed (x, y) batch the gradients and activations are
            computed on.
        print_fn: where the console line goes.
    """

    def __init__(
        self,
        writer: Callable[[str], tf.summary.SummaryWriter],
        freq: int,
        probe_batch: tuple,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.freq = freq
        self.probe_batch = tf.nest.map_structure(tf.convert_to_tensor, probe_batch)
        self.print_fn = print_fn
        self._gradients = None
        self._activations = None  # a compiled x -> [output of each layer], or None
        self._layer_names = ()
        self._relu_layers = ()
        self._resolved = False
        self._start = None  # the trainable weights when a due epoch began

    def due(self, epoch: int) -> bool:
        """Whether the 0-based `epoch` is one to write."""
        return bool(self.freq) and (epoch + 1) % self.freq == 0

    def on_train_begin(self, logs=None) -> None:
        if self.freq and not self._resolved:
            self._resolved = True
            found = activation_function(self.model)
            self._activations, self._layer_names, self._relu_layers, problem = found
            if problem:
                self.print_fn(
                    f"harness: activations of {self.model.name} cannot be reached "
                    f"({problem}); gradient norms and update ratios are still written"
                )

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = None
        if self.due(epoch):
            self._start = [np.array(v.numpy(), copy=True) for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None) -> None:
        if not self.due(epoch):
            return
        variables = self.model.trainable_variables
        if self._gradients is None:
            self._gradients = probe_gradients(self.model)
        gradient_norms = [_norm(g) for g in self._gradients(*self.probe_batch)]
        ratios = []
        if self._start is not None:
            ratios = [
                update_ratio(start, variable.numpy())
                for start, variable in zip(self._start, variables)
            ]
        self._start = None
        outputs = {}
        if self._activations is not None:
            values = self._activations(self.probe_batch[0])
            outputs = {name: value.numpy() for name, value in zip(self._layer_names, values)}
        with self.writer(TRAIN).as_default(step=epoch + 1):
            for variable, norm in zip(variables, gradient_norms):
                tf.summary.scalar(f"{GRADIENT_NORM}/{variable.path}", norm)
            tf.summary.scalar(GRADIENT_NORM, global_norm(gradient_norms))
            for variable, ratio in zip(variables, ratios):
                tf.summary.scalar(f"{UPDATE_RATIO}/{variable.path}", ratio)
            for name, value in outputs.items():
                write_histogram(f"{ACTIVATIONS}/{name}", value)
                if name in self._relu_layers:
                    tf.summary.scalar(f"{DEAD_RELU}/{name}", dead_fraction(value))


def activation_function(model: keras.Model) -> tuple:
    """(compiled x -> [output of each layer], the layers' names, the names of those
    ending in a ReLU, None) for a model whose layers form a graph; (None, (), (), why
    not) otherwise.

    The graph is a new `keras.Model` from the model's inputs to the output of
    each layer that has one output tensor (input layers left out); it shares
    the model's layers and weights and leaves the model as it was.
    """
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None, (), (), "a subclassed model"
    try:  # the structure the model was built with: a dict for named inputs
        inputs = model.input
    except (AttributeError, ValueError):  # a Sequential model: its one input
        inputs = inputs[0] if len(inputs) == 1 else inputs
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # never called, or several outputs
            continue
        if isinstance(output, keras.KerasTensor) and output.dtype != "string":
            layers.append((layer, output))
    if not layers:
        return None, (), (), "no layer with one output"
    try:
        graph = keras.Model(
            inputs,
            {layer.name: output for layer, output in layers},
            name=f"{model.name}_activations",
        )
    except (ValueError, TypeError) as error:  # e.g. a layer outside the model's graph
        return None, (), (), f"{type(error).__name__}: {str(error).splitlines()[0]}"
    names = tuple(layer.name for layer, _ in layers)

    def activations(x):
        values = graph(x, training=False)
        return [tf.cast(values[name], tf.float32) for name in names]

    relus = tuple(layer.name for layer, _ in layers if ends_in_relu(layer))
    return tf.function(activations), names, relus, None


def ends_in_relu(layer: keras.layers.Layer) -> bool:
    """Whether the layer's output is a plain ReLU: a layer with `activation="relu"`
    (Dense, Conv, `Activation("relu")`) or a `keras.layers.ReLU` without a slope."""
    if isinstance(layer, keras.layers.ReLU):
        return not float(layer.negative_slope)
    return getattr(layer, "activation", None) is keras.activations.relu


def dead_fraction(values: np.ndarray) -> float:
    """The fraction of units (entries of the last axis) that are <= 0 for every
    example and position (every other axis) of `values`."""
    values = np.asarray(values)
    if values.ndim == 0 or values.shape[-1] == 0:
        return 0.0
    dead = np.all(values.reshape(-1, values.shape[-1]) <= 0, axis=0)
    return float(dead.mean())


def update_ratio(start: np.ndarray, end: np.ndarray) -> float:
    """||end - start|| / ||start||; ||end - start|| / ||end|| where start is all
    zeros (0 if both are)."""
    change = _norm(np.asarray(end, np.float64) - np.asarray(start, np.float64))
    size = _norm(start) or _norm(end)
    return change / size if size else 0.0


def global_norm(norms) -> float:
    """sqrt(sum of the squares of `norms`): the norm of all of them together."""
    return float(np.sqrt(np.sum(np.square(np.asarray(norms, np.float64)))))


def _norm(values) -> float:
    """The L2 norm of a tensor, array or IndexedSlices (None: a variable the loss
    does not reach, norm 0), in float64."""
    if values is None:
        return 0.0
    if isinstance(values, (tf.Tensor, tf.IndexedSlices, tf.Variable)):
        values = tf.convert_to_tensor(values).numpy()
    return float(np.linalg.norm(np.asarray(values, np.float64).ravel()))
