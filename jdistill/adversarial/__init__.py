"""Adversarial distillation as games of the training engine: players (student, generator,
discriminator, peers) that each keep their own parameters and optax state, and the moves that
update them.

- :mod:`jdistill.adversarial.data_free`: a generator synthesises the transfer set (DFAD, DAFL, ZSKT).
- :mod:`jdistill.adversarial.discriminator`: a discriminator tells teacher outputs from student outputs.
- :mod:`jdistill.adversarial.online`: peers trained together from scratch (mutual learning,
  discriminators between peers).
"""
