"""Named presets: published training recipes as flat configuration values (the flat names of
:mod:`jdistill.train.groups`), for ``jdistill train-teacher --preset NAME`` and ``jdistill distill
--preset NAME`` and for Python (``RunConfig(**preset_values("crd", Context("resnet8x4")), ...)``).

Options given on the command line override a preset's values; every run prints which values came
from its preset. ``crd`` is the default of the CIFAR data sets (``--preset none`` turns it off).

- ``crd``: the CRD/RepDistiller CIFAR-100 benchmark (Tian et al. 2020; :mod:`jdistill.recipes`).
- ``hinton2012``: the MNIST recipe of Hinton et al. 2012 (appendix A), the teacher of Hinton et al.
  2015: batches of 100, ``dw <- mu dw - (1 - mu) lr g`` with lr times 0.998 after each epoch,
  momentum rising from 0.5 to 0.99 over 500 epochs, max-norm sqrt(15). The paper's lr of 10 kills
  the units here, from Flax's initialisation or PyTorch's: after one epoch 94-97 % of the first
  hidden layer is never active on 2,000 training images (76-78 % at lr 2; 7-9 % at lr 1, under 1 %
  at 0.5; ``experiments/hinton_teacher_rate.py``). The paper does not say how its gradient is
  scaled; lr 1 is used. On held-out images lr 0.5 made better teachers and students with the
  schedule compressed to 100, 300 and 900 epochs (README, "The teacher's learning rate"), so
  ``experiments/hinton_mnist.py`` trains its compressed teacher at 0.5 (on the test set: 73 errors,
  distilled students 92.0, against 78 and 115.7 at lr 1), and so does its 3,000-epoch schedule; the
  preset keeps 1, the rate the one 3,000-epoch teacher run so far was measured at.
- ``imagenet-kd``: the ImageNet ResNet-34 -> ResNet-18 KD recipe of mdistiller (Zhao et al. 2022's
  baselines): 100 epochs, batch 512, SGD lr 0.2 x batch/512, momentum 0.9, weight decay 1e-4, x0.1 at
  epochs 30, 60, 90 (scaled with ``--epochs``), KD at T = 1 weighted 0.5 with CE 0.5. Only the
  optimizer, schedule and loss: the ImageNet augmentation (random-resized crop, flip) is the data
  pipeline's (``--dataset imagefolder``).
- ``dfad-teacher``, ``dafl-teacher``: the LeNet-5 MNIST teachers of the DFAD and DAFL reference
  code (:data:`jdistill.adversarial.data_free.PAPER_TEACHERS`; ZSKT uses DFAD's).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from jdistill import recipes


@dataclasses.dataclass(frozen=True)
class Context:
    """What a preset's values may depend on: the model trained, its methods and teacher's model, and
    the epochs and batch size given on the command line (``None``: the preset's own)."""

    model: str
    methods: tuple[str, ...] = ("ce",)
    teacher_model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    description: str
    values: Callable[[Context], dict[str, Any]]
    default_for: tuple[str, ...] = ()  # data sets that get this preset unless another is named


def _crd(context: Context) -> dict[str, Any]:
    return recipes.crd_benchmark(
        context.model,
        context.methods,
        teacher_model=context.teacher_model,
        epochs=context.epochs or recipes.BENCHMARK_EPOCHS,
        batch_size=context.batch_size or recipes.BENCHMARK_BATCH,
    )


HINTON_2012 = {
    "batch_size": 100,
    "learning_rate": 1.0,
    "dampening": True,
    "nesterov": False,
    "momentum": 0.99,
    "initial_momentum": 0.5,
    "momentum_ramp_epochs": 500,
    "schedule": "exponential",
    "lr_decay": 0.998,
    "max_norm": 15**0.5,
}


IMAGENET_EPOCHS, IMAGENET_BATCH, IMAGENET_MILESTONES = 100, 512, (30, 60, 90)


def _imagenet_kd(context: Context) -> dict[str, Any]:
    epochs, batch = context.epochs or IMAGENET_EPOCHS, context.batch_size or IMAGENET_BATCH
    scaled = {round(m * epochs / IMAGENET_EPOCHS) for m in IMAGENET_MILESTONES}
    values = {
        "epochs": epochs,
        "batch_size": batch,
        "optimizer": "sgd",
        "learning_rate": 0.2 * batch / IMAGENET_BATCH,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "schedule": "step",
        "lr_milestones": tuple(sorted(m for m in scaled if 0 < m < epochs)),
        "lr_decay": 0.1,
        "temperature": 1.0,
    }
    if "kd" in context.methods:
        values["weights"] = {"ce": 0.5, "kd": 0.5}
    return values


def _paper_teacher(method: str) -> Callable[[Context], dict[str, Any]]:
    def values(context: Context) -> dict[str, Any]:
        from jdistill.adversarial.data_free import PAPER_TEACHERS

        return dict(PAPER_TEACHERS[method])

    return values


PRESETS = {
    "crd": Preset(
        "the CRD/RepDistiller CIFAR-100 benchmark: 240 epochs, batch 64, SGD 0.9 (not Nesterov), wd 5e-4, "
        "lr 0.05 (0.01 for MobileNetV2/ShuffleNet) x batch/64, x0.1 at epochs 150/180/210 (scaled with "
        "--epochs), crop+flip, the benchmark's loss weights",
        _crd,
        default_for=recipes.RECIPE_DATASETS,
    ),
    "hinton2012": Preset(
        "Hinton et al. 2012's MNIST optimizer: batch 100, lr 1 x 0.998 per epoch, damped momentum "
        "0.5 -> 0.99 over 500 epochs, max-norm sqrt(15)",
        lambda context: dict(HINTON_2012),
    ),
    "imagenet-kd": Preset(
        "mdistiller's ImageNet KD recipe: 100 epochs, batch 512, SGD lr 0.2 x batch/512, momentum 0.9, "
        "wd 1e-4, x0.1 at epochs 30/60/90 (scaled with --epochs), T = 1, 0.5 CE + 0.5 KD",
        _imagenet_kd,
    ),
    "dfad-teacher": Preset(
        "the DFAD (and ZSKT) reference code's LeNet-5 teacher: SGD 0.01, momentum 0.9, wd 1e-4, batch 256, "
        "constant, 10 epochs, PyTorch's initialisation",
        _paper_teacher("dfad"),
    ),
    "dafl-teacher": Preset(
        "the DAFL reference code's LeNet-5 teacher: Adam 1e-3, batch 256, constant, 9 epochs, PyTorch's "
        "initialisation",
        _paper_teacher("dafl"),
    ),
}


def default_preset(dataset: str) -> str | None:
    """The preset a data set gets when none is named (``crd`` for CIFAR, none otherwise)."""
    return next((name for name, preset in PRESETS.items() if dataset in preset.default_for), None)


def preset_values(name: str, context: Context) -> dict[str, Any]:
    """The flat configuration values of the preset ``name`` for ``context``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} (or none)")
    return PRESETS[name].values(context)
