"""Deep SVDD (Ruff et al. 2018, "Deep One-Class Classification", ICML, http://proceedings.mlr.press/v80/ruff18a).

A network φ maps normal data into a small hypersphere around a fixed centre c; the anomaly score is
‖φ(x) − c‖². As the paper requires, φ has **no bias terms** and no bounded activations (either lets
the network map everything onto c, the trivial solution); c is the mean of φ over the training data
at initialisation, with near-zero coordinates pushed to ±eps, and is not trained.

Objectives: ``"one-class"`` minimises the mean squared distance; ``"soft-boundary"`` minimises
R² + 1/ν · mean(max(0, ‖φ(x) − c‖² − R²)), where the radius R is set after each epoch (from the
second on) to the (1 − ν)-quantile of the training distances, as in the paper.

``pretrain=N`` first trains φ for N epochs as the encoder of an autoencoder (a mirrored decoder,
mean squared error, thrown away afterwards) and takes c from the pretrained φ, as the paper does
for its image experiments; 0 starts from the random initialisation.

``n_nets=K`` trains K networks side by side, each from its own random start with its own centre
(and radius); the score is the mean of their distances, each first standardised by the median and
IQR of its training distances. A single Deep SVDD depends much on its initialisation (Ruff et al.
report it); the average of five is steadier and better (docs/results.md: one-class MNIST 0.946 →
0.961). ``n_nets=1`` is the paper's single network, scored by its raw distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..nn import resolve_arch
from ..settings import setting
from .base import Batch, Model, ModelConfig
from .body import feature_scaling, robust_location_scale
from .registry import register

OBJECTIVES = ("one-class", "soft-boundary")


def _bias_free_mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=False))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def _bias_free_conv(input_shape: Sequence[int], latent_dim: int, channels: Sequence[int]) -> nn.Sequential:
    """The paper's MNIST/CIFAR design: 5×5 conv → batch norm without affine terms → leaky ReLU → 2×2 max pool."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 5, padding=2, bias=False), nn.BatchNorm2d(out, eps=1e-4, affine=False),
                   nn.LeakyReLU(0.1), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, latent_dim, bias=False)]
    return nn.Sequential(*layers)


def _mirror_decoder(net: nn.Sequential, input_shape: Sequence[int], latent_dim: int, arch: str) -> nn.Module:
    """A decoder that mirrors φ (used only while pretraining): MLP sizes reversed, or a linear layer
    back to the last feature map followed by upsample → 5×5 conv → batch norm → leaky ReLU blocks."""
    if arch == "mlp":
        sizes = [m.in_features for m in net if isinstance(m, nn.Linear)]
        return _bias_free_mlp([latent_dim, *reversed(sizes)])
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    shapes = [tuple(input_shape[1:])]
    for _ in convs:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    c_last = convs[-1].out_channels
    layers: list[nn.Module] = [nn.Linear(latent_dim, c_last * shapes[-1][0] * shapes[-1][1], bias=False),
                               nn.Unflatten(1, (c_last, *shapes[-1])), nn.LeakyReLU(0.1)]
    for conv, size in zip(reversed(convs), reversed(shapes[:-1])):
        layers += [nn.Upsample(size=size), nn.Conv2d(conv.out_channels, conv.in_channels, 5, padding=2, bias=False)]
        if conv is not convs[0]:
            layers += [nn.BatchNorm2d(conv.in_channels, eps=1e-4, affine=False), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers, nn.Sigmoid())


@dataclass
class DeepSVDDConfig(ModelConfig):
    """Settings of Deep SVDD."""

    latent_dim: int = setting(32, "size of the output space φ(x) where the sphere lies", min=1, max=100000)
    hidden: tuple[int, ...] = setting((128, 64), "hidden sizes of the MLP network (tables)", min=1)
    arch: str = setting("auto", "network: mlp, conv or auto (conv for images of at least 28x28)",
                        choices=("auto", "mlp", "conv"))
    channels: tuple[int, ...] = setting((8, 4), "conv channels per 5x5 conv + 2x2 pool stage (images)", min=1)
    objective: str = setting("one-class", "one-class or soft-boundary", choices=OBJECTIVES)
    nu: float = setting(0.1, "soft-boundary: share of training data allowed outside the sphere", above=0, max=1)
    eps: float = setting(0.1, "centre coordinates nearer 0 than this are pushed to ±eps", above=0)
    n_nets: int = setting(5, "networks from different random starts, averaged (1: the paper's)", min=1, max=1000)
    pretrain: int = setting(0, "epochs of autoencoder pretraining of each network", min=0, max=100000)
    pretrain_lr: float = setting(1e-3, "learning rate of the pretraining", above=0)
    pretrain_batch_size: int = setting(128, "batch size of the pretraining", min=1)


@register("deep-svdd", DeepSVDDConfig, task="anomaly")
class DeepSVDD(Model):
    """One-class Deep SVDD on tables (standardised inside, statistics stored) or images."""

    # distances to the centre are computed from fp32 features; auto stays fp32: its small nets (8-4 channels, max
    # pooling) are bound by per-op overheads, and bf16 measured no faster (1.01×, benchmarks/bench_conv_speed.py)
    bf16_ready = True

    def __init__(self, c: DeepSVDDConfig) -> None:
        super().__init__()
        input_shape, latent_dim, hidden, channels, n_nets = c.input_shape, c.latent_dim, c.hidden, c.channels, c.n_nets
        c.arch = arch = resolve_arch(c.arch, input_shape)
        self.pretrain, self.pretrain_lr, self.pretrain_batch_size = c.pretrain, c.pretrain_lr, c.pretrain_batch_size
        self.input_shape = tuple(input_shape)
        self.arch, self.objective, self.nu, self.eps = arch, c.objective, c.nu, c.eps
        d = math.prod(input_shape)
        self.nets = nn.ModuleList(_bias_free_mlp([d, *hidden, latent_dim]) if arch == "mlp"
                                  else _bias_free_conv(input_shape, latent_dim, channels) for _ in range(n_nets))
        # Tables are standardised with training statistics; images are read as they come (in [0, 1]).
        self.register_buffer("x_shift", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(d))
        self.register_buffer("center", torch.zeros(n_nets, latent_dim))
        self.register_buffer("radius", torch.zeros(n_nets))
        # Per network: the median and IQR of its training scores (identity for a single network).
        self.register_buffer("score_shift", torch.zeros(n_nets))
        self.register_buffer("score_scale", torch.ones(n_nets))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    @classmethod
    def upgrade_saved(cls, config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
        """Read a run saved before ``n_nets`` existed: one network ``net.*``, a centre of shape (latent,)."""
        if "n_nets" in config:
            return config, state
        state = {("nets.0." + k[4:] if k.startswith("net.") else k): v for k, v in state.items()}
        state["center"] = state["center"].reshape(1, -1)
        state["radius"] = state["radius"].reshape(1)
        state.setdefault("score_shift", torch.zeros(1))
        state.setdefault("score_scale", torch.ones(1))
        return {**config, "n_nets": 1}, state

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if self.arch == "mlp":
            return (x - self.x_shift) / self.x_scale
        return x.view(-1, *self.input_shape)

    def embed(self, x: torch.Tensor, net: int = 0) -> torch.Tensor:
        """φ(x) of one of the networks: standardised inputs through the bias-free network."""
        return self.nets[net](self._inputs(x))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """‖φ_k(x) − c_k‖² for every network k: shape (batch, n_nets)."""
        x = self._inputs(x)
        return torch.stack([(net(x).float() - c).pow(2).sum(1) for net, c in zip(self.nets, self.center)], 1)

    def prepare(self, data) -> None:
        """Standardisation statistics (tables), autoencoder pretraining (``pretrain`` epochs) and the
        centres c_k from the networks as they start the one-class training."""
        if self.arch == "mlp":
            shift, scale = feature_scaling(data.floats().reshape(len(data), -1))
            self.x_shift.copy_(shift)
            self.x_scale.copy_(scale)
        if self.pretrain > 0:
            self.pretrain_losses = [self._pretrain(data, net) for net in self.nets]
        self._set_centers(data)

    def _pretrain(self, data, net: nn.Module) -> list[float]:
        """``net`` as the encoder of an autoencoder: Adam on the mean squared reconstruction error of
        the (standardised) input; the decoder is discarded afterwards. Batches are drawn with torch's
        global generator, which the trainer has seeded. Returns the mean loss of each epoch."""
        device = self.center.device
        decoder = _mirror_decoder(net, self.input_shape, self.center.shape[1], self.arch).to(device)
        opt = torch.optim.Adam([*net.parameters(), *decoder.parameters()], lr=self.pretrain_lr)
        x_all = data.tensor()
        losses = []
        for _ in range(self.pretrain):
            total = torch.zeros((), device=device)
            for idx in torch.randperm(len(data)).split(self.pretrain_batch_size):
                target = self._inputs(data.to_float(x_all[idx]).to(device))
                loss = (decoder(net(target)).view_as(target) - target).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            losses.append(float(total) / len(data))
        return losses

    @torch.no_grad()
    def _set_centers(self, data) -> None:
        was = self.training
        self.eval()  # batch-norm statistics are not touched while c is computed
        total = torch.zeros_like(self.center, dtype=torch.float64)
        for xb in _chunks(data):
            xb = self._inputs(xb.to(self.center.device))
            total += torch.stack([net(xb).double().sum(0) for net in self.nets])
        c = (total / len(data)).float()
        # Coordinates near zero are pushed to ±eps: a zero centre is reachable by dead units alone.
        c = torch.where(c.abs() < self.eps, torch.where(c < 0, -self.eps, self.eps), c)
        self.center.copy_(c)
        self.train(was)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The networks' objectives summed (each network's gradient is its own objective's)."""
        dist = self.distances(batch.x)
        if self.objective == "one-class":
            return {"loss": dist.mean(0).sum()}
        r2 = self.radius**2
        loss = (r2 + torch.relu(dist - r2).mean(0) / self.nu).sum()
        return {"loss": loss, "radius": self.radius.detach().mean()}

    def _net_scores(self, dist: torch.Tensor) -> torch.Tensor:
        return dist - self.radius**2 if self.objective == "soft-boundary" else dist

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, train, run_dir: Path | None = None) -> dict[str, float]:
        """Soft-boundary: R_k ← (1 − ν)-quantile of net k's training distances (after the first epoch);
        several networks: the median and IQR of each one's training scores."""
        self.epochs_seen += 1
        soft = self.objective == "soft-boundary" and int(self.epochs_seen) >= 2
        if not soft and len(self.nets) == 1:
            return {}
        was = self.training
        self.eval()
        dists = torch.cat([self.distances(chunk.to(self.center.device)) for chunk in _chunks(train)]).float()
        out = {}
        if soft:
            self.radius.copy_(torch.quantile(dists.sqrt(), 1 - self.nu, dim=0))
            out["radius"] = float(self.radius.mean())
        if len(self.nets) > 1:
            shift, scale = robust_location_scale(self._net_scores(dists))
            self.score_shift.copy_(shift)
            self.score_scale.copy_(scale)
        self.train(was)
        return out

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """‖φ(x) − c‖² (soft-boundary: minus R², so positive means outside the sphere); several networks:
        the mean of their scores, each standardised by its training median and IQR (a network whose
        training scores do not spread, a collapsed one, counts 0). Higher = more anomalous."""
        scores = (self._net_scores(self.distances(x)) - self.score_shift) / self.score_scale
        return scores.mean(1)


def _chunks(data, size: int = 4096):
    x = data.tensor()
    for start in range(0, len(data), size):
        yield data.to_float(x[start : start + size])
