"""Representation mapping: the student's embedding, through a trainable linear projection,
regresses the teacher's penultimate embedding (``repmap``, L2 or cosine), or also reproduces the
teacher's logits through the teacher's frozen classifier head (``srrl``, Yang et al. 2021).

After training, the student's embedding -> projection -> the teacher's head is a classifier of
its own: :func:`with_teacher_head` builds it from the two finished runs, :func:`test_accuracy`
scores it.
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill import losses
from jdistill.data import Dataset
from jdistill.methods.base import Method
from jdistill.methods.modules import Memory
from jdistill.methods.registry import register
from jdistill.models import Connector

DISTANCES = ("l2", "cosine")
TEACHER_LAYER = "embedding"  # the input of the built-in models' classifier head


def _flat(x):
    return x.reshape(x.shape[0], -1)


def _projection(student_shape, teacher_shape, rngs: nnx.Rngs) -> Connector:
    """A trainable linear map from the flattened student feature to the teacher's width."""
    return Connector((math.prod(student_shape),), (math.prod(teacher_shape),), rngs=rngs)


@register
@dataclasses.dataclass(frozen=True)
class RepresentationMapping(Method):
    """The student's ``student_layer``, projected by a trainable linear map to the teacher's
    width, regresses the teacher's ``teacher_layer`` (the penultimate embedding by default):
    ``distance="l2"`` (mean squared error) or ``"cosine"`` (1 - cosine similarity). Term
    ``repmap``, weight 1. With the default layers the trained student can then be used with the
    teacher's classifier head (:func:`with_teacher_head`)."""

    distance: str = "l2"
    student_layer: str = "embedding"
    teacher_layer: str = TEACHER_LAYER
    name = "repmap"
    default_weights: ClassVar = {"repmap": 1.0}

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"repmap: distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")

    def features(self, student_shapes, teacher_shapes):
        return (self.student_layer,), (self.teacher_layer,)

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        return {
            "projection": _projection(
                student_shapes[self.student_layer], teacher_shapes[self.teacher_layer], rngs
            )
        }

    def loss(self, student, teacher, batch, modules, hparams):
        s = modules["projection"](_flat(student[1][self.student_layer]))
        t = _flat(teacher[1][self.teacher_layer])
        distance = losses.embedding_l2 if self.distance == "l2" else losses.embedding_cosine
        return {"repmap": distance(s, t)}


class FrozenHead(nnx.Module):
    """A copy of the teacher's linear head, held fixed: state, not trained parameters."""

    def __init__(self, kernel, bias):
        self.kernel = Memory(jnp.asarray(kernel, jnp.float32))
        self.bias = Memory(jnp.asarray(bias, jnp.float32))


@register
@dataclasses.dataclass(frozen=True)
class SoftmaxRegression(Method):
    """Yang et al. 2021 (SRRL): the student's ``student_layer``, projected by a trainable linear
    map to the width of the teacher's embedding, matches that embedding (``srrl_feature``, mean
    squared error) and, passed through the teacher's frozen classifier head, the teacher's logits
    (``srrl_head``, mean squared error over classes). Weights 1 and 1.

    The method reads the head from ``teacher_run``, which must be the run given as the teacher
    (``--method-option srrl.teacher_run=DIR`` with ``--teacher DIR``): the trainer gives methods
    the teacher's outputs, not its parameters."""

    teacher_run: str | None = None
    student_layer: str = "embedding"
    name = "srrl"
    default_weights: ClassVar = {"srrl_feature": 1.0, "srrl_head": 1.0}

    def features(self, student_shapes, teacher_shapes):
        return (self.student_layer,), (TEACHER_LAYER,)

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        if self.teacher_run is None:
            raise ValueError(
                "srrl: reads the teacher's classifier head from its run directory; set "
                "--method-option srrl.teacher_run=DIR to the same directory as --teacher"
            )
        from jdistill.train.distill import load_teacher  # the trainer imports the methods

        head = load_teacher(self.teacher_run, dataset).variables[0]["model"].get("head")
        width = math.prod(teacher_shapes[TEACHER_LAYER])
        if head is None or head["kernel"].shape[0] != width:
            raise ValueError(
                f"srrl: the teacher in {self.teacher_run} needs a linear 'head' on its {width}-wide "
                f"{TEACHER_LAYER!r} (is it the run given as --teacher?)"
            )
        return {
            "projection": _projection(
                student_shapes[self.student_layer], teacher_shapes[TEACHER_LAYER], rngs
            ),
            "head": FrozenHead(head["kernel"], head["bias"]),
        }

    def loss(self, student, teacher, batch, modules, hparams):
        s = modules["projection"](_flat(student[1][self.student_layer]))
        head = modules["head"]
        return {
            "srrl_feature": losses.embedding_l2(s, _flat(teacher[1][TEACHER_LAYER])),
            "srrl_head": losses.teacher_head_regression(s, teacher[0], head.kernel[...], head.bias[...]),
        }


class TeacherHeadStudent(nnx.Module):
    """A classifier: the student's ``layer`` -> the trained projection -> the teacher's head."""

    def __init__(self, student: nnx.Module, projection: nnx.Module, head: nnx.Module, layer: str):
        self.student, self.projection, self.head, self.layer = student, projection, head, layer

    def __call__(self, images: jax.Array) -> jax.Array:
        feature = self.student(images, train=False)[1][self.layer]
        return self.head(self.projection(_flat(feature)))


def load_run(run_dir: str, dataset: Dataset) -> nnx.Module:
    """The final state of the finished run in ``run_dir`` as a ``Trainable``: its ``model`` and
    its methods' ``extras`` (e.g. ``extras["repmap"]["projection"]``)."""
    from jdistill.train.distill import load_student

    return load_student(run_dir, dataset)


def with_teacher_head(student_run: str, teacher_run: str, dataset: Dataset) -> TeacherHeadStudent:
    """The student of ``student_run`` (trained with ``repmap`` or ``srrl``) with its projection
    and the classifier head of the teacher in ``teacher_run``."""
    from jdistill.train.distill import load_teacher
    from jdistill.train.rundir import RunDir

    config = RunDir(student_run).config()
    mapped = [m for m in config.distill.methods if m in ("repmap", "srrl")]
    if not mapped:
        raise ValueError(
            f"{student_run} was trained without a projection (methods {'+'.join(config.distill.methods)})"
        )
    options = config.distill.method_options.get(mapped[0], {})
    if options.get("teacher_layer", TEACHER_LAYER) != TEACHER_LAYER:
        raise ValueError(
            f"{student_run}: the projection maps to the teacher's {options['teacher_layer']!r}, "
            f"not to the {TEACHER_LAYER!r} that the teacher's head reads"
        )
    teacher = load_teacher(teacher_run, dataset)
    teacher_model = nnx.merge(teacher.graphdef, *teacher.variables).model
    if getattr(teacher_model, "head", None) is None:
        raise ValueError(f"the teacher model {teacher.config.model.name!r} has no classifier 'head'")
    trainable = load_run(student_run, dataset)
    projection = trainable.extras[mapped[0]]["projection"]
    return TeacherHeadStudent(
        trainable.model, projection, teacher_model.head, options.get("student_layer", "embedding")
    )


def test_accuracy(classifier: nnx.Module, dataset: Dataset, *, batch_size: int = 500) -> float:
    """Accuracy of ``classifier`` (images -> logits, in inference mode) on the test set."""
    graphdef, state = nnx.split(classifier)
    predict = jax.jit(lambda state, images: jnp.argmax(nnx.merge(graphdef, state)(images), -1))
    images = dataset.normalise(dataset.x_test)
    predictions = np.concatenate(
        [np.asarray(predict(state, images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )
    return float(np.mean(predictions == dataset.y_test))


test_accuracy.__test__ = False  # not a pytest test
