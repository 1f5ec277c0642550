"""Rule distillation as a game: Hu et al. 2016, "Harnessing Deep Neural Networks with Logic Rules".

The student ``p = softmax(s)`` is distilled from a teacher made of its own prediction projected
onto soft rules (eq. 4, :func:`jdistill.losses.rule_teacher`)::

    q ∝ p exp(-C sum_l lambda_l (1 - r_l(x, y)))

where ``r_l(x, y)`` in [0, 1] is the soft truth of rule ``l`` for input ``x`` and class ``y``. The
rules are any function ``rules(module, images) -> [B, L, K]`` of the student and the inputs (the
paper's "A but B" rule reads the network's own sentiment of clause B); ``q`` is held fixed (outside
the gradient). The student's objective (eq. 2, :func:`jdistill.losses.rule_distillation`), with
``pi(t) = min(pi0, 1 - alpha^t)`` over the optimizer steps ``t`` (:func:`jdistill.losses.
imitation_weight`)::

    mean_labelled[(1 - pi) CE(y, p) + pi CE(q, p)] + pi mean_unlabelled[CE(q, p)]

Without rules (``rules=None``) the same game trains the student on its labelled examples only
(``mean_labelled CE(y, p)``): the baseline.

The batches (:class:`LabelledAndUnlabelled`): every labelled training example in every round,
plus a fresh uniform draw (with replacement) of unlabelled ones, the labelled/unlabelled split
being the data set's hidden labels (:meth:`jdistill.data.Dataset.hide_labels`:
:data:`~jdistill.data.dataset.UNLABELLED`). :func:`rule_distillation_game` builds the
:class:`~jdistill.train.Game`; :func:`jdistill.train.fit` plays it.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill import losses
from jdistill.data import Dataset
from jdistill.data.dataset import UNLABELLED
from jdistill.models import count_params
from jdistill.train.config import OptimizerConfig
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.game import Game, Move, Phase
from jdistill.train.player import Player

Rules = Callable[[nnx.Module, jax.Array], jax.Array]  # (student, images) -> [B, L, K] soft truths


def call(module, images):
    """The logits of a module called on ``images``."""
    return module(images)


@dataclasses.dataclass(frozen=True)
class LabelledAndUnlabelled:
    """Batches of every labelled training example of ``dataset`` plus ``unlabelled`` unlabelled
    ones drawn uniformly with replacement (a new draw every round, from ``fold_in(key(seed),
    epoch)``), padded to a multiple of ``multiple_of`` rows (so that the batch splits over that
    many devices) with rows of ``weight`` 0: ``{"image", "label", "index", "weight"}``. An epoch
    is ``steps_per_epoch`` rounds."""

    dataset: Dataset
    unlabelled: int
    steps_per_epoch: int
    multiple_of: int = 8
    augmented = False  # nothing drawn per batch but the rows

    def __post_init__(self):
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer, got {self.steps_per_epoch}")
        if self.unlabelled < 0:
            raise ValueError(f"unlabelled must be >= 0, got {self.unlabelled}")
        if not len(self.labelled_indices):
            raise ValueError(f"{self.dataset.name}: no labelled training example")
        if self.unlabelled and not len(self.unlabelled_indices):
            raise ValueError(
                f"{self.dataset.name}: no unlabelled training example to draw {self.unlabelled} from"
            )

    @property
    def labelled_indices(self) -> np.ndarray:
        return np.flatnonzero(self.dataset.y_train != UNLABELLED)

    @property
    def unlabelled_indices(self) -> np.ndarray:
        return np.flatnonzero(self.dataset.y_train == UNLABELLED)

    @property
    def rows(self) -> int:
        """Real rows of a batch: the labelled examples and the unlabelled draw."""
        return len(self.labelled_indices) + self.unlabelled

    @property
    def batch_size(self) -> int:
        return math.ceil(self.rows / self.multiple_of) * self.multiple_of

    def arrays(self) -> dict:
        return {"x": self.dataset.x_train, "y": self.dataset.y_train.astype(np.int32)}

    def order(self, seed: int, epoch: int) -> jax.Array:
        """``[steps_per_epoch, batch_size]`` training indices; -1 marks a padding row."""
        key = jax.random.fold_in(jax.random.key(seed), epoch)
        steps, labelled, pool = self.steps_per_epoch, self.labelled_indices, self.unlabelled_indices
        drawn = jax.random.randint(key, (steps, self.unlabelled), 0, max(len(pool), 1))
        return jnp.concatenate(
            [
                jnp.broadcast_to(jnp.asarray(labelled, jnp.int32), (steps, len(labelled))),
                jnp.asarray(pool, jnp.int32)[drawn] if self.unlabelled else jnp.zeros((steps, 0), jnp.int32),
                jnp.full((steps, self.batch_size - self.rows), -1, jnp.int32),
            ],
            axis=1,
        )

    def batch(self, arrays: dict, indices: jax.Array, key: jax.Array) -> dict:
        real = indices >= 0
        rows = jnp.maximum(indices, 0)
        return {
            "image": self.dataset.normalise(arrays["x"][rows]),
            "label": jnp.where(real, arrays["y"][rows], UNLABELLED),
            "index": indices,
            "weight": real.astype(jnp.float32),
        }

    def images(self) -> np.ndarray:
        return np.asarray(self.dataset.normalise(self.dataset.x_train), np.float32)


def teacher_logits(module, images, *, rules: Rules, C: float, rule_weights, logits: Callable = call):
    """Logits of the rule teacher: ``log_softmax(s) - C sum_l lambda_l (1 - r_l)``, whose softmax
    is ``q ∝ p exp(-C sum_l lambda_l (1 - r_l))`` (:func:`jdistill.losses.rule_teacher`)."""
    satisfaction = jnp.asarray(rules(module, images), jnp.float32)
    penalty = jnp.einsum("l,blk->bk", jnp.asarray(rule_weights, jnp.float32), 1.0 - satisfaction)
    return jax.nn.log_softmax(logits(module, images).astype(jnp.float32), axis=-1) - C * penalty


def teacher_probs(module, images, *, rules: Rules, C: float, rule_weights, logits: Callable = call):
    """The rule teacher ``q`` for ``images`` (:func:`jdistill.losses.rule_teacher`)."""
    satisfaction = rules(module, images)
    return losses.rule_teacher(logits(module, images), satisfaction, C=C, rule_weights=rule_weights)


def rule_distillation_loss(
    view, *, rules: Rules | None, C: float, rule_weights, pi0: float, alpha: float, logits: Callable = call,
    player: str = "student",
):  # fmt: skip
    """The student's objective on the round's batch (see the module docstring), ``pi`` at the
    round's index; without ``rules``, the mean cross-entropy of the labelled rows."""
    batch = view.batch
    module = view.module(player)
    images, labels = batch["image"], batch["label"]
    weight = batch.get("weight", jnp.ones(labels.shape, jnp.float32))
    labelled = weight * (labels >= 0)
    unlabelled = weight * (labels < 0)
    n_labelled, n_unlabelled = jnp.maximum(labelled.sum(), 1.0), jnp.maximum(unlabelled.sum(), 1.0)
    s = logits(module, images)
    accuracy = jnp.sum(labelled * (jnp.argmax(s, -1) == labels)) / n_labelled
    if rules is None:
        total = jnp.sum(labelled * losses.cross_entropy(s, jnp.maximum(labels, 0))) / n_labelled
        return total, {"loss": total, "accuracy": accuracy}
    pi = losses.imitation_weight(view.round, pi0=pi0, alpha=alpha)
    q = jax.lax.stop_gradient(teacher_probs(module, images, rules=rules, C=C, rule_weights=rule_weights,
                                            logits=logits))  # fmt: skip
    per_row = losses.rule_distillation(s, labels, q, imitation=jnp.where(labels >= 0, pi, 1.0))
    labelled_term = jnp.sum(labelled * per_row) / n_labelled
    unlabelled_term = pi * jnp.sum(unlabelled * per_row) / n_unlabelled
    total = labelled_term + unlabelled_term
    return total, {
        "loss": total,
        "loss/labelled": labelled_term,
        "loss/unlabelled": unlabelled_term,
        "pi": pi,
        "accuracy": accuracy,
        "teacher_agreement": jnp.sum(weight * (jnp.argmax(s, -1) == jnp.argmax(q, -1))) / weight.sum(),
    }


def subset(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """``dataset`` with the test examples where ``mask`` holds."""
    return dataclasses.replace(dataset, x_test=dataset.x_test[mask], y_test=dataset.y_test[mask])


def rule_evaluator(
    dataset: Dataset, *, teacher: Callable | None = None, regions: Mapping[str, np.ndarray] = {},
    logits: Callable = call, player: str = "student",
):  # fmt: skip
    """``evaluate(players, teachers, mesh)``: the student's test ``accuracy`` and ``loss``, each also
    on the test examples of every region (``{name: boolean mask of the test set}``) as
    ``<name>_accuracy``; with ``teacher(module, images) -> logits`` (the rule teacher, which needs
    the student), the same for it as ``teacher_accuracy``, ``teacher_<name>_accuracy``."""
    parts = {"": dataset, **{f"{name}_": subset(dataset, np.asarray(mask)) for name, mask in regions.items()}}
    evaluators = []
    for prefix, data in parts.items():
        evaluators.append((prefix, ClassifierEvaluator(data, player=player, logits=logits)))
        if teacher is not None:
            evaluators.append((f"teacher_{prefix}", ClassifierEvaluator(data, player=player, logits=teacher)))

    def evaluate(players, teachers, mesh) -> dict:
        return {p + k: v for p, e in evaluators for k, v in e(players, teachers, mesh).items()}

    return evaluate


def rule_distillation_game(
    config, *, model: nnx.Module, dataset: Dataset, rules: Rules | None, optimizer: OptimizerConfig,
    steps: int, steps_per_epoch: int, unlabelled: int, seed: int, C: float = 6.0, rule_weights=None,
    pi0: float = 0.9, alpha: float = 0.995, logits: Callable = call, regions: Mapping[str, np.ndarray] = {},
    eval_every: int = 1, checkpoint_every: int = 1, label: str = "", summary: Mapping = {},
) -> Game:  # fmt: skip
    """The game of ``config``: one player, ``student`` (``model``, trained with ``optimizer`` for
    ``steps`` steps in epochs of ``steps_per_epoch``), moving on :func:`rule_distillation_loss`
    with ``rules`` (``[L]`` ``rule_weights``, default ones) on batches of every labelled example of
    ``dataset`` plus ``unlabelled`` unlabelled ones (:class:`LabelledAndUnlabelled`), evaluated
    by :func:`rule_evaluator` (with the rule teacher when there are rules)."""
    if steps < 1 or steps % steps_per_epoch:
        raise ValueError(
            f"steps ({steps}) must be a positive multiple of steps_per_epoch ({steps_per_epoch})"
        )
    epochs = steps // steps_per_epoch
    optimizer.check_epochs(epochs)
    source = LabelledAndUnlabelled(dataset, unlabelled if rules is not None else 0, steps_per_epoch)
    weights = None
    teacher = None
    if rules is not None:
        count = jnp.shape(rules(model, jnp.zeros((1, *dataset.input_shape), jnp.float32)))[1]
        weights = jnp.ones(count) if rule_weights is None else jnp.asarray(rule_weights, jnp.float32)
        teacher = functools.partial(teacher_logits, rules=rules, C=C, rule_weights=weights, logits=logits)
    loss = functools.partial(
        rule_distillation_loss, rules=rules, C=C, rule_weights=weights, pi0=pi0, alpha=alpha, logits=logits
    )
    return Game(
        config=config,
        players={"student": Player.create(model, optimizer.build(epochs, steps_per_epoch))},
        phases=(Phase("train", epochs, (Move("student", loss),)),),
        source=source,
        seed=seed,
        evaluate=rule_evaluator(dataset, teacher=teacher, regions=regions, logits=logits),
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        label=label,
        unit="step",
        summary={
            "rules": rules is not None,
            "steps": steps,
            "seed": seed,
            "labelled": len(source.labelled_indices),
            "unlabelled_per_step": source.unlabelled,
            "params": count_params(model),
            **summary,
        },
    )


def load_student(run_dir, config_class, player: str = "student") -> tuple[nnx.Module, object]:
    """The final ``player`` of the finished run in ``run_dir`` as a module, and the run's
    configuration (an instance of ``config_class``, whose ``build()`` makes the run's game)."""
    from jdistill.train import checkpoint, groups
    from jdistill.train.rundir import RunDir

    run = RunDir(run_dir)
    run.summary()  # refuses unfinished runs
    config = groups.from_record(config_class, run.config_record()["config"])
    start = config.build().players[player]
    params, rest = checkpoint.restore_variables(run.path, player, start.params, start.rest, format=run.format)
    return nnx.merge(start.graphdef, params, rest), config
