"""PyTorch counterparts of the CIFAR pieces that ``benchmarks/throughput.py`` times: the CIFAR
ResNets of the CRD/RepDistiller benchmark and a CRD objective that computes what jdistill's does.

Benchmark-only (``pip install torch==2.13.0``); nothing in jdistill imports it.

- :func:`resnet`: resnet8 ... resnet110 (widths 16, 16, 32, 64) and resnet8x4, resnet32x4 (32, 64,
  128, 256), the architecture of ``jdistill/models/resnet.py`` (and of RepDistiller's
  ``models/resnet.py``): conv3x3-BN-ReLU, three stages of (depth - 2) / 6 basic blocks (stride 1, 2,
  2; a conv1x1-BN shortcut where the shape changes), global average pooling, a linear classifier.
  The forward pass returns ``(logits, embedding)``, the embedding being the pooled vector the
  classifier reads (jdistill's ``features["embedding"]``). Parameter counts equal jdistill's (the
  benchmark prints both).
- :func:`kd_loss`: ``ce_weight CE + kd_weight T^2 KL(softmax(t/T) || softmax(s/T))``, batch means.
- :class:`CRD`: Tian et al. 2020 as :class:`jdistill.methods.embedding.Contrastive` computes it:
  linear embeddings to ``dim`` L2-normalised, a memory bank per side over the training set,
  ``num_negatives`` negatives per example drawn with replacement from the other classes on the
  device, scores ``exp(<bank, embedding> / T)`` against the other side's bank (all dot products
  with the bank, then the picked columns, as jdistill does), the normalisation constants set from
  the first batch, RepDistiller's NCE loss, then (after the backward pass) the momentum update of
  the banks' rows.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# depth, widths (stem, stage1, stage2, stage3)
RESNETS = {
    **{f"resnet{d}": (d, (16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
NCE_EPS = 1e-7  # RepDistiller's ContrastLoss (and jdistill's crd_nce)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A bias-free convolution padded by ``kernel // 2``, then BatchNorm (no activation)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """ReLU(conv3x3-BN-ReLU-conv3x3-BN + shortcut); the shortcut is conv1x1-BN where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 3)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of ``depth`` = 6n + 2 and ``widths``; ``forward`` -> ``(logits, embedding)``."""

    def __init__(self, depth: int, widths, num_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.stem = conv_bn(in_channels, widths[0], 3)
        stages = []
        for i in range(3):
            in_planes, planes, stride = widths[i], widths[i + 1], 1 if i == 0 else 2
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stages(F.relu(self.stem(images)))
        embedding = h.mean(dim=(2, 3))
        return self.head(embedding), embedding


def resnet(name: str, num_classes: int = 100) -> CifarResNet:
    """One of :data:`RESNETS` by jdistill's name."""
    if name not in RESNETS:
        raise ValueError(f"no PyTorch model {name!r}; choose from {', '.join(RESNETS)}")
    depth, widths = RESNETS[name]
    return CifarResNet(depth, widths, num_classes)


def count_params(module: nn.Module) -> int:
    """Parameters (weights, biases, BatchNorm scale and offset; not the running statistics or banks),
    trained or frozen: jdistill's ``count_params``."""
    return sum(p.numel() for p in module.parameters())


def kd_loss(
    student_logits, teacher_logits, labels, *, temperature: float, ce_weight: float, kd_weight: float
):
    """``ce_weight CE + kd_weight T^2 KL(softmax(t/T) || softmax(s/T))``, each a batch mean."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, -1),
        F.log_softmax(teacher_logits / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    return ce_weight * F.cross_entropy(student_logits, labels) + kd_weight * temperature**2 * soft


class CRD(nn.Module):
    """CRD's trainable heads and banks for ``labels`` (the class of every training example); calling
    it with a batch's embeddings, labels and dataset indices returns the batch mean of the
    per-example loss (student side + teacher side); :meth:`update_memory`, after the backward pass,
    moves the banks' rows for the batch (as jdistill's step does after taking the scores)."""

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        labels: torch.Tensor,
        *,
        dim: int = 128,
        num_negatives: int = 16384,
        nce_temperature: float = 0.07,
        momentum: float = 0.5,
    ):
        super().__init__()
        self.embed_s = nn.Linear(student_dim, dim)
        self.embed_t = nn.Linear(teacher_dim, dim)
        self.num_negatives, self.nce_temperature, self.momentum = num_negatives, nce_temperature, momentum
        self.pending = None  # the last batch's (index, student, teacher embeddings) for update_memory
        n = len(labels)
        bound = math.sqrt(3 / dim)  # entries of variance 1 / dim, as RepDistiller's banks start
        self.register_buffer("memory_s", torch.empty(n, dim).uniform_(-bound, bound))
        self.register_buffer("memory_t", torch.empty(n, dim).uniform_(-bound, bound))
        self.register_buffer("z_s", torch.zeros(()))  # normalisation constants, 0 until the first batch
        self.register_buffer("z_t", torch.zeros(()))
        labels = torch.as_tensor(labels, dtype=torch.long)
        count = torch.bincount(labels)
        self.register_buffer("class_order", torch.argsort(labels, stable=True))
        self.register_buffer("class_start", torch.cumsum(count, 0) - count)
        self.register_buffer("class_count", count)

    def negatives(self, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """[B, K + 1] dataset indices: the example itself, then K of other classes (with replacement)."""
        n = self.class_order.shape[0]
        start, count = self.class_start[labels][:, None], self.class_count[labels][:, None]
        u = (torch.rand(len(labels), self.num_negatives, device=labels.device) * (n - count)).long()
        u = torch.minimum(u, n - count - 1)  # rand() may round up to 1.0 in float32
        j = torch.where(u < start, u, u + count)
        return torch.cat([index[:, None], self.class_order[j]], dim=1)

    def scores(self, bank: torch.Tensor, embed: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """[B, K + 1] ``exp(<bank[indices[b, k]], embed[b]> / T)``, the bank outside the gradient."""
        sims = bank.detach() @ embed.T  # [N, B]: every row of the bank once, as jdistill
        return torch.exp(
            sims[indices, torch.arange(len(embed), device=embed.device)[:, None]] / self.nce_temperature
        )

    def nce(self, p: torch.Tensor) -> torch.Tensor:
        """RepDistiller's ContrastLoss on normalised scores [B, K + 1]: [B]."""
        noise = (p.shape[1] - 1) / self.memory_s.shape[0]
        log_d1 = torch.log(p[:, 0] / (p[:, 0] + noise + NCE_EPS))
        log_d0 = torch.log(noise / (p[:, 1:] + noise + NCE_EPS))
        return -(log_d1 + log_d0.sum(dim=1))

    def forward(self, student_embedding, teacher_embedding, labels, index) -> torch.Tensor:
        s = F.normalize(self.embed_s(student_embedding), dim=1)
        t = F.normalize(self.embed_t(teacher_embedding), dim=1)
        with torch.no_grad():
            indices = self.negatives(labels, index)
        scores_s = self.scores(self.memory_t, s, indices)  # each side against the other side's bank
        scores_t = self.scores(self.memory_s, t, indices)
        n = self.memory_s.shape[0]
        with torch.no_grad():  # set once from the first batch, without a host round trip
            self.z_s.copy_(torch.where(self.z_s > 0, self.z_s, scores_s.mean() * n))
            self.z_t.copy_(torch.where(self.z_t > 0, self.z_t, scores_t.mean() * n))
        self.pending = (index, s.detach(), t.detach())
        return (self.nce(scores_s / self.z_s) + self.nce(scores_t / self.z_t)).mean()

    @torch.no_grad()
    def update_memory(self) -> None:
        """The momentum update of the banks' rows for the last batch, to call after its backward
        pass (which reads the banks as the scores saw them): each row moves to ``momentum row +
        (1 - momentum) embedding``, normalised."""
        index, s, t = self.pending
        for bank, embed in ((self.memory_s, s), (self.memory_t, t)):
            rows = self.momentum * bank[index] + (1 - self.momentum) * embed
            bank.index_copy_(0, index, F.normalize(rows, dim=1))
        self.pending = None
