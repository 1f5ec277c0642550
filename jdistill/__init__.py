"""jdistill: knowledge distillation for JAX/Flax.

- :mod:`jdistill.losses`: pure-function distillation losses (use them in your own train step).
- :mod:`jdistill.models`: Flax NNX models returning logits and named features.
- :mod:`jdistill.data`: data sets as arrays, on-device batching and augmentation.
- :mod:`jdistill.train`: jitted, data-parallel teacher training and distillation.
"""

__version__ = "0.2.0"
