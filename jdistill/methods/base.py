"""What a distillation method is: a small frozen dataclass the trainer reads declaratively.

A method has
- ``name``: what ``--method`` calls it, and ``default_weights``: ``{term: weight}`` for every term
  ``loss`` returns (the CRD/RepDistiller benchmark's weights where it has one);
- ``features(student_shapes, teacher_shapes)``: the names of the features it reads from each
  model (the trainer checks they exist and names the missing one);
- ``modules(student_shapes, teacher_shapes, dataset, rngs)``: extra modules it adds (connectors,
  embeddings, variances, memory banks), trained with the student; non-``nnx.Param`` variables in
  them (e.g. CRD's memory) are state carried through the jitted step;
- ``loss(student, teacher, batch, modules, hparams)``: ``{term: per-example [B] or scalar}``;
  ``student`` and ``teacher`` are ``(logits, features)`` (the teacher's already outside the
  gradient); ``batch`` holds ``label`` [B], ``index`` [B] (positions in the training set),
  ``epoch`` (fractional, traced) and ``key`` (a PRNG key for the method's own randomness);
- optionally an initialisation stage: ``init_epochs`` > 0 epochs before training in which only
  the parameters for which ``init_trains(path)`` is true are trained, on the terms of
  ``init_loss`` weighted by ``init_weights``, at the constant rate ``init_learning_rate``
  (``None``: the run's base rate) (AB, FT, FSP in the benchmark).

The trainer sums ``weight[term] * mean(term)`` and logs each term; it never looks at names.
"""

import abc
import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from flax import nnx

from jdistill.data import Dataset
from jdistill.models import Output

Shapes = Mapping[str, tuple[int, ...]]
Terms = dict


@dataclasses.dataclass(frozen=True)
class Method(abc.ABC):
    """Base of every method: no features, no modules, no initialisation stage."""

    name: ClassVar[str]
    default_weights: ClassVar[Mapping[str, float]]
    init_weights: ClassVar[Mapping[str, float]] = {}
    init_epochs: ClassVar[int] = 0  # methods with an initialisation stage make it an option
    init_learning_rate: ClassVar[float | None] = None

    def features(
        self, student_shapes: Shapes, teacher_shapes: Shapes
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (), ()

    def modules(
        self, student_shapes: Shapes, teacher_shapes: Shapes, dataset: Dataset, rngs: nnx.Rngs
    ) -> dict:
        return {}

    @abc.abstractmethod
    def loss(self, student: Output, teacher: Output | None, batch, modules, hparams) -> Terms:
        """The method's named terms (see the module docstring)."""

    def init_loss(self, student: Output, teacher: Output, batch, modules, hparams) -> Terms:
        return {}

    def init_trains(self, path: tuple[str, ...]) -> bool:
        """Whether the parameter at ``path`` (e.g. ``("model", "conv1", "kernel")`` or
        ``("extras", "ft", "paraphraser", ...)``) trains in the initialisation stage."""
        return False

    def frozen(self, path: tuple[str, ...]) -> bool:
        """Whether the parameter at ``path`` is held fixed while training (after the
        initialisation stage), e.g. FT's paraphraser."""
        return False


def stage_names(shapes: Shapes) -> tuple[str, ...]:
    """``stage1``, ``stage2``, ... present in ``shapes`` (the post-ReLU stage outputs of the
    CIFAR models), else the ``conv1``, ``conv2``, ... maps of the small models."""
    for prefix in ("stage", "conv"):
        names = []
        while f"{prefix}{len(names) + 1}" in shapes:
            names.append(f"{prefix}{len(names) + 1}")
        if names:
            return tuple(names)
    return ()


def paired_stages(method: str, student_shapes: Shapes, teacher_shapes: Shapes) -> tuple[tuple[str, str], ...]:
    """``(student name, teacher name)`` for each stage both models have, in order; the stage
    counts must agree."""
    s, t = stage_names(student_shapes), stage_names(teacher_shapes)
    if not s or len(s) != len(t):
        raise ValueError(
            f"{method}: pairs the student's and the teacher's stages, but the student has "
            f"{len(s)} ({', '.join(s) or 'none'}) and the teacher {len(t)} ({', '.join(t) or 'none'}); "
            f"set the layers with --method-option"
        )
    return tuple(zip(s, t))


def as_pairs(layers) -> tuple[tuple[str, str], ...] | None:
    """Layer pairs from options (JSON gives lists) as a tuple of tuples; ``None`` stays."""
    return None if layers is None else tuple(tuple(pair) for pair in layers)
