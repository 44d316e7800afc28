"""DINO: self-distillation with no labels (Caron et al. 2021, algorithm 1).

A student g_s and a teacher g_t (same architecture) see different crops of one image. The teacher
sees only the global crops; its output is centred and sharpened, the student's only sharpened:

    P_t(x) = softmax((g_t(x) - c) / tau_t),      P_s(x) = softmax(g_s(x) / tau_s)
    L = sum_{x in global crops} sum_{x' in all crops, x' != x} - P_t(x) . log P_s(x')  / n_pairs
    c <- m c + (1 - m) mean_batch g_t(x)                       (center, m = 0.9)
    theta_t <- lambda theta_t + (1 - lambda) theta_s           (EMA teacher, lambda: cosine 0.996 -> 1)

tau_t warms up linearly (0.04 -> 0.07 in the paper) and tau_s = 0.1."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> torch.Tensor:
    """Per-step values: linear warmup_start -> base over warmup_steps, then cosine base -> final."""
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and total_steps > 0")
    warm = torch.linspace(warmup_start, base, warmup_steps, dtype=torch.float64) if warmup_steps else torch.empty(0, dtype=torch.float64)
    n = total_steps - warmup_steps
    i = torch.arange(n, dtype=torch.float64)
    cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * i / max(n, 1)))
    return torch.cat([warm, cos])


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> torch.Tensor:
    """Per-epoch teacher temperature: linear warmup_temp -> temp over warmup_epochs, then constant."""
    if epochs <= 0 or not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= epochs ({epochs}) and epochs > 0")
    warm = torch.linspace(warmup_temp, temp, warmup_epochs, dtype=torch.float64) if warmup_epochs else torch.empty(0, dtype=torch.float64)
    return torch.cat([warm, torch.full((epochs - warmup_epochs,), temp, dtype=torch.float64)])


class DINOHead(nn.Module):
    """Projection head: MLP (GELU, optional BatchNorm) -> bottleneck -> L2 normalize -> weight-normalized linear to K prototypes."""

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 n_layers: int = 3, norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if use_bn:  # the paper's option for convnet backbones; helps small, short runs
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)  # the norm g of each prototype
        if norm_last_layer:
            self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))  # (B, K)


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the sharpened student over all
    (teacher global crop, different student crop) pairs; keeps and updates the center c."""

    def __init__(self, out_dim: int, n_global: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.n_global = n_global
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], teacher_temp: float,
                update_center: bool = True) -> torch.Tensor:
        """student_out: one (B, K) tensor per crop (the global crops first); teacher_out: one per global crop."""
        if len(teacher_out) != self.n_global or len(student_out) < self.n_global:
            raise ValueError(f"DINO expects {self.n_global} teacher outputs and at least as many student outputs, "
                             f"got {len(teacher_out)} and {len(student_out)}")
        t_probs = [F.softmax((t.detach() - self.center) / teacher_temp, dim=-1) for t in teacher_out]
        s_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, n_pairs = 0.0, 0
        for iq, p in enumerate(t_probs):
            for v, logq in enumerate(s_logp):
                if v == iq:
                    continue  # the same view for teacher and student
                total = total + (-(p * logq).sum(dim=-1)).mean()
                n_pairs += 1
        if update_center:
            self.update_center(torch.cat([t.detach() for t in teacher_out]))
        return total / n_pairs

    @torch.no_grad()
    def update_center(self, teacher_batch: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean over the batch of the teacher's raw outputs."""
        self.center.mul_(self.center_momentum).add_(teacher_batch.mean(dim=0, keepdim=True), alpha=1 - self.center_momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- momentum * theta_t + (1 - momentum) * theta_s, parameter by parameter (buffers copied)."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


class DINO(nn.Module):
    """Student = backbone + DINOHead; teacher = a frozen copy updated only by EMA. forward(crops) takes
    a list of (B, ...) crop batches (the n_global global crops first; crops of one size batch together)."""

    def __init__(self, backbone: nn.Module, embed_dim: int, out_dim: int = 4096, n_global: int = 2,
                 student_temp: float = 0.1, center_momentum: float = 0.9, **head_kwargs):
        super().__init__()
        self.student = nn.Sequential(backbone, DINOHead(embed_dim, out_dim, **head_kwargs))
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss_fn = DINOLoss(out_dim, n_global, student_temp, center_momentum)
        self.n_global = n_global

    @property
    def backbone(self) -> nn.Module:
        """The teacher's backbone: the encoder DINO evaluates and keeps (it is the better one)."""
        return self.teacher[0]

    @staticmethod
    def _run(net: nn.Module, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply net once per group of consecutive crops with the same shape; split back per crop."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape == crops[i].shape:
                j += 1
            y = net(torch.cat(crops[i:j]))
            out.extend(y.chunk(j - i))
            i = j
        return out

    def forward(self, crops: list[torch.Tensor], teacher_temp: float = 0.04) -> torch.Tensor:
        with torch.no_grad():
            t_out = self._run(self.teacher, crops[: self.n_global])
        s_out = self._run(self.student, crops)
        return self.loss_fn(s_out, t_out, teacher_temp, update_center=self.training)

    def update_teacher(self, momentum: float) -> None:
        """One EMA step of the teacher towards the student."""
        ema_update(self.teacher, self.student, momentum)
