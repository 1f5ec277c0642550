"""Generative latent mapping: a VAE teacher, and a smaller student that learns an encoder into
the teacher's latent space and a decoder that reproduces the teacher's images from latent points,
both from teacher-generated pairs only.

- :mod:`jdistill.generative.training`: the VAE teacher's and the latent-mapping student's games
  (``VAEConfig``, ``MappingConfig``), played by :func:`train_vae`, :func:`train_mapping`.
- :mod:`jdistill.generative.evaluation`: errors on held-out latent points and real images,
  classifier scores of generated images, throughput, sample grids.
"""

from jdistill.generative.evaluation import (
    Frozen,
    classifier_scores,
    heldout_latents,
    mapping_metrics,
    real_image_metrics,
    save_grid,
    throughput,
)
from jdistill.generative.training import (
    MappingConfig,
    VAEConfig,
    load_mapping,
    load_vae,
    mapping_loss,
    train_mapping,
    train_vae,
    vae_loss,
)

__all__ = [
    "Frozen",
    "MappingConfig",
    "VAEConfig",
    "classifier_scores",
    "heldout_latents",
    "load_mapping",
    "load_vae",
    "mapping_loss",
    "mapping_metrics",
    "real_image_metrics",
    "save_grid",
    "throughput",
    "train_mapping",
    "train_vae",
    "vae_loss",
]
