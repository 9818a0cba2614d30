"""Weights shaped like trained ones, for timing models that have none."""


def trained_like(model, x, seed=0):
    """Gives `model`'s batch norms trained-like values, in place, for timing.

    Scales and offsets are drawn around 1 and 0 and the moving statistics
    measured on `x` (one forward pass in training mode). Latency does not
    depend on weight values, but int8 files do: freshly initialised weights
    give near-constant activations, whose int8 scales XNNPACK refuses for
    some ADD/MUL ops; those ops then run outside it, slower than float32,
    which a trained model never shows. Returns `model`.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                           rng.normal(0.0, 0.5, beta.shape).astype("float32"), mean, variance])
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    return model
