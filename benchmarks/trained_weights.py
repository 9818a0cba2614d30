"""Weights shaped like trained ones, for timing models that have none.

Latency does not depend on weight values, but int8 files do: freshly
initialised weights give near-constant activations, whose int8 scales XNNPACK
refuses for some ADD/MUL ops. The `keras-lightnets benchmark` command needs
the same, so the one definition lives with it.
"""

from keras_lightnets.cli import _trained_like as trained_like

__all__ = ["trained_like"]
