"""harness: train a Keras model three ways and see everything in TensorBoard."""
