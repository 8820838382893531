"""User model builders for the `--model=package.module:function` tests.

`tiny` is what a user writes: `(input_shape, num_classes) -> keras.Model`,
ending in the task's head. The other names are the mistakes a user makes.
"""

import keras
from keras import layers

# The builder is not told --num_words; this covers the default (and smaller).
VOCABULARY = 10000


def tiny(input_shape, num_classes):
    """Embedding -> global average -> head: the smallest model that learns."""
    if num_classes == 2:
        head = layers.Dense(1, activation="sigmoid")
    else:
        head = layers.Dense(num_classes, activation="softmax")
    return keras.Sequential([
        keras.Input(shape=input_shape, dtype="int32"),
        layers.Embedding(VOCABULARY, 8),
        layers.GlobalAveragePooling1D(),
        head,
    ], name="tiny")


def not_a_model(input_shape, num_classes):
    """Returns a layer instead of a model."""
    return layers.Dense(num_classes)


NOT_A_FUNCTION = 42
