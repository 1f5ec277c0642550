"""Attention transfer between transformers: the student's attention distributions (``vit_at``)
and value relations (``vit_vr``) imitate the teacher's (MiniLM, Wang et al. 2020)."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.methods.base import Method, as_pairs
from jdistill.methods.registry import register


def _depth(shapes, prefix: str) -> int:
    depth = 0
    while f"{prefix}{depth + 1}" in shapes:
        depth += 1
    return depth


def uniform_layers(student_depth: int, teacher_depth: int) -> tuple[tuple[int, int], ...]:
    """``(student block, teacher block)`` pairs, 1-based: student block ``i`` <- teacher block
    ``round(i * L_t / L_s)``, so the last blocks pair (TinyBERT's uniform mapping)."""
    return tuple((i, max(1, round(i * teacher_depth / student_depth))) for i in range(1, student_depth + 1))


@dataclasses.dataclass(frozen=True)
class _PairedBlocks(Method):
    """Pairs student and teacher transformer blocks (``layers``) and heads (``head_map``)."""

    layers: tuple | None = None
    head_map: tuple | None = None
    kind: ClassVar[str]  # the feature read per block: attn or values

    def __post_init__(self):  # options arrive as JSON lists
        object.__setattr__(self, "layers", as_pairs(self.layers))
        if self.head_map is not None:
            heads = tuple(h if isinstance(h, int) else tuple(h) for h in self.head_map)
            object.__setattr__(self, "head_map", heads)

    def pairs(self, student_shapes, teacher_shapes) -> tuple[tuple[int, int], ...]:
        s_depth, t_depth = _depth(student_shapes, self.kind), _depth(teacher_shapes, self.kind)
        if not s_depth or not t_depth:
            raise ValueError(
                f"{self.name}: needs the features {self.kind}1, {self.kind}2, ... of both models (a ViT); "
                f"the student has {s_depth} and the teacher {t_depth}"
            )
        pairs = self.layers or uniform_layers(s_depth, t_depth)
        for s, t in pairs:
            if not (1 <= int(s) <= s_depth and 1 <= int(t) <= t_depth):
                raise ValueError(
                    f"{self.name}: layer pair [{s}, {t}] is out of range: the student has blocks "
                    f"1..{s_depth}, the teacher 1..{t_depth}"
                )
        return tuple((int(s), int(t)) for s, t in pairs)

    def features(self, student_shapes, teacher_shapes):
        pairs = self.pairs(student_shapes, teacher_shapes)
        for s, t in pairs:  # a head map that does not fit fails now, not in the first step
            teacher = jax.ShapeDtypeStruct((1, *teacher_shapes[f"{self.kind}{t}"]), jnp.float32)
            heads = student_shapes[f"{self.kind}{s}"][0]
            jax.eval_shape(lambda x, heads=heads: losses.map_heads(x, heads, head_map=self.head_map), teacher)
        return tuple(f"{self.kind}{s}" for s, _ in pairs), tuple(f"{self.kind}{t}" for _, t in pairs)

    def summed(self, loss_fn, student, teacher):
        """``loss_fn`` summed over the paired blocks' features."""
        s_feat, t_feat = student[1], teacher[1]
        return sum(
            loss_fn(s_feat[f"{self.kind}{s}"], t_feat[f"{self.kind}{t}"], head_map=self.head_map)
            for s, t in self.pairs(s_feat, t_feat)
        )


@register
@dataclasses.dataclass(frozen=True)
class ViTAttention(_PairedBlocks):
    """Attention distributions: ``KL(teacher || student)`` per head and query token
    (:func:`jdistill.losses.attention_kl`, MiniLM's reduction), summed over the paired blocks.
    Term ``vit_at``, weight 1.

    ``layers``: ``[[student block, teacher block], ...]`` (1-based); default: every student block,
    paired uniformly (student block i <- teacher block round(i * L_t / L_s)); ``[[L_s, L_t]]`` is
    MiniLM's last-layer-only transfer. ``head_map``: which teacher heads each student head
    imitates, one entry (a head or a list of heads, averaged) per student head; default:
    consecutive groups of H_t / H_s teacher heads, averaged (:func:`jdistill.losses.map_heads`)."""

    name = "vit_at"
    kind = "attn"
    default_weights: ClassVar = {"vit_at": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        return {"vit_at": self.summed(losses.attention_kl, student, teacher)}


@register
@dataclasses.dataclass(frozen=True)
class ViTValueRelation(_PairedBlocks):
    """MiniLM's value relation: ``KL`` between teacher and student ``softmax(V V^T / sqrt(d))`` per
    head and token (:func:`jdistill.losses.value_relation`), summed over the paired blocks. Term
    ``vit_vr``, weight 1; ``layers`` and ``head_map`` as for ``vit_at``."""

    name = "vit_vr"
    kind = "values"
    default_weights: ClassVar = {"vit_vr": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        return {"vit_vr": self.summed(losses.value_relation, student, teacher)}
