"""Language-model distillation on the engine: a small causal transformer
(:mod:`jdistill.models.transformer_lm`) trained on a corpus (:mod:`jdistill.data.text`), and a
student distilled from it token by token, on the teacher's samples or on its own (GKD), with the
token-level divergences of :mod:`jdistill.losses.tokens`. A teacher's top-k tokens can be
cached on disk (:mod:`jdistill.lm.teacher_cache`). ``LMConfig(...).build()`` makes the game; :func:`jdistill.train.fit` plays it; ``jdistill lm`` is the command."""

from jdistill.lm import teacher_cache
from jdistill.lm.config import CORPORA, FORMS, LOSSES, SPARSE_MODES, LMConfig
from jdistill.lm.game import build, load_corpus, load_lm_teacher

__all__ = [
    "CORPORA",
    "FORMS",
    "LOSSES",
    "SPARSE_MODES",
    "LMConfig",
    "build",
    "load_corpus",
    "load_lm_teacher",
    "teacher_cache",
]
