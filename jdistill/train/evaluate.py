"""Exact test metrics of a classifier player on the data-parallel mesh: the test set is padded to
whole batches, split over the devices, and the padding masked, so any batch and device count give
exact averages. A frozen teacher's test predictions are computed once, not at every evaluation
(of an in-memory test set; a streamed one is read batch by batch at each evaluation)."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jdistill.data import Dataset
from jdistill.losses import cross_entropy
from jdistill.train import parallel
from jdistill.train.parallel import DATA_AXIS

EVAL_BATCH = 500


def model_logits(module, images):
    """The logits of a bare model, in inference mode."""
    return module(images, train=False)[0]


class ClassifierEvaluator:
    """``evaluate(players, teachers, mesh)`` -> ``accuracy``, ``loss`` (cross-entropy) and, with
    ``teacher`` (the name of one of the game's frozen teachers), ``agreement`` (same prediction) of
    ``players[player]`` on the test set. A stacked
    player (K peers) gives ``peer{k}/accuracy``, their means as ``accuracy`` and ``loss``, and the
    ``ensemble_accuracy`` of their mean probabilities. ``logits(module, images)`` reads a module."""

    __test__ = False  # not a pytest class

    def __init__(self, dataset: Dataset, *, player: str = "student", teacher: str | None = None,
                 logits: Callable = model_logits):  # fmt: skip
        self.dataset, self.player, self.teacher, self.logits = dataset, player, teacher, logits
        self._batches, self._steps = {}, {}
        self._prepare = self._predict = None  # a streamed test set's, jitted once

    def batches(self, mesh, teachers) -> dict:
        """The padded test set ``[batches, batch, ...]``, each batch split over ``mesh``, with the
        teacher's predictions (computed once per mesh)."""
        if mesh not in self._batches:
            data, n = self.dataset, len(self.dataset.y_test)
            batch = math.ceil(EVAL_BATCH / mesh.size) * mesh.size
            count = math.ceil(n / batch)
            pad = lambda a: np.concatenate([a, np.zeros((count * batch - n, *a.shape[1:]), a.dtype)])
            sharded = NamedSharding(mesh, P(None, DATA_AXIS))
            images = pad(np.asarray(data.normalise(data.x_test), np.float32))
            batches = jax.device_put(
                {
                    "image": images.reshape(count, batch, *data.input_shape),
                    "label": pad(data.y_test.astype(np.int32)).reshape(count, batch),
                    "mask": pad(np.ones(n, np.float32)).reshape(count, batch),
                },
                sharded,
            )  # fmt: skip
            if self.teacher is not None:
                predict = jax.jit(lambda t, x: jnp.argmax(self.logits(t.module(), x), -1))
                batches["teacher_prediction"] = jnp.stack(
                    [predict(teachers[self.teacher], batches["image"][i]) for i in range(count)]
                )
            self._batches[mesh] = batches
        return self._batches[mesh]

    def _step(self, graphdef, stacked: int):
        if (graphdef, stacked) not in self._steps:

            def logits_of(params, rest, images):
                return self.logits(nnx.merge(graphdef, params, rest), images)

            def sums(params, rest, batch):
                mask, labels = batch["mask"], batch["label"]
                if stacked:
                    logits = jax.vmap(logits_of, in_axes=(0, 0, None))(params, rest, batch["image"])
                    ce = jax.vmap(lambda z: cross_entropy(z, labels))(logits)
                    ensemble = jnp.argmax(jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), -1)
                    extra = {"ensemble_correct": jnp.sum(mask * (ensemble == labels))}
                else:
                    logits = logits_of(params, rest, batch["image"])
                    ce, extra = cross_entropy(logits, labels), {}
                predictions = jnp.argmax(logits, -1)
                out = {
                    "correct": jnp.sum(mask * (predictions == labels), axis=-1),
                    "ce": jnp.sum(mask * ce, axis=-1),
                    "count": jnp.sum(mask),
                    **extra,
                }
                if "teacher_prediction" in batch:
                    out["agree"] = jnp.sum(mask * (predictions == batch["teacher_prediction"]), axis=-1)
                return out

            self._steps[graphdef, stacked] = jax.jit(sums)
        return self._steps[graphdef, stacked]

    def test_batches(self, mesh, teachers):
        """The test set's batches on ``mesh``, each with its mask (and the teacher's predictions):
        slices of :meth:`batches`, or for a streamed data set read from disk one at a time (each
        process its part), scaled and normalised on the devices."""
        if not getattr(self.dataset, "streamed", False):
            batches = self.batches(mesh, teachers)
            yield from (jax.tree.map(lambda a: a[i], batches) for i in range(len(batches["mask"])))
            return
        from jdistill.data.streaming import eval_batches

        data = self.dataset
        if self._prepare is None:
            prepare = lambda images: data.normalise(images.astype(jnp.float32) * jnp.float32(data.scale))
            self._prepare = jax.jit(prepare)
            self._predict = jax.jit(lambda t, x: jnp.argmax(self.logits(t.module(), x), -1))
        batch = math.ceil(EVAL_BATCH / mesh.size) * mesh.size
        local = eval_batches(data.test, batch, transform=data.test_transform,
                             process_index=jax.process_index(), process_count=jax.process_count())  # fmt: skip
        for part in local:
            placed = parallel.from_processes(part, mesh)
            placed["image"] = self._prepare(placed["image"])
            if self.teacher is not None:
                placed["teacher_prediction"] = self._predict(teachers[self.teacher], placed["image"])
            yield placed

    def __call__(self, players, teachers, mesh) -> dict:
        """``players`` and ``teachers`` replicated over ``mesh``, as :func:`~jdistill.train.fit`
        places them."""
        player = players[self.player]
        step = self._step(player.graphdef, player.stacked)
        sums = [step(player.params, player.rest, batch) for batch in self.test_batches(mesh, teachers)]
        total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
        accuracy, loss = total["correct"] / total["count"], total["ce"] / total["count"]
        if not player.stacked:
            out = {"accuracy": accuracy, "loss": loss}
            if "agree" in total:
                out["agreement"] = total["agree"] / total["count"]
            return {k: float(v) for k, v in out.items()}
        out = {f"peer{k}/accuracy": float(a) for k, a in enumerate(accuracy)}
        out["accuracy"] = float(np.mean(accuracy))  # the mean peer's
        out["loss"] = float(np.mean(loss))
        out["ensemble_accuracy"] = float(total["ensemble_correct"] / total["count"])
        return out
