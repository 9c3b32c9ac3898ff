"""VQ-VAE (van den Oord et al. 2017, arXiv:1711.00937) with EMA codebook updates (its appendix;
Razavi et al. 2019), dead-code restarts, and a small autoregressive prior over the code grid so
that ``sample`` generates without data.

The prior is a GRU over the codes in raster order, trained jointly on the (detached) codes of
each batch: its gradients never reach the encoder, so it only learns to model the codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import conv_depth, conv_sizes
from ..precision import full_precision
from ..settings import SettingError, setting
from .base import Batch, ModelConfig
from .body import Body
from .likelihoods import LIKELIHOODS
from .registry import register


class EMAQuantizer(nn.Module):
    """Nearest-codeword quantiser whose codebook follows an exponential moving average of the
    encoder outputs assigned to each code; codes unused for a while restart at random outputs."""

    def __init__(self, n_codes: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5,
                 restart_after: int = 200) -> None:
        super().__init__()
        self.n_codes, self.dim, self.decay, self.eps, self.restart_after = n_codes, dim, decay, eps, restart_after
        self.register_buffer("codebook", torch.randn(n_codes, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(n_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("idle_steps", torch.zeros(n_codes, dtype=torch.long))
        self.register_buffer("usage", torch.zeros(n_codes))  # assignments counted over training, for the histogram

    def assign(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword for each row of ``flat`` (N, dim)."""
        d = flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.square().sum(1)
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z (B, D, h, w) → (straight-through quantised z, code indices (B, h, w), stats)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.assign(flat)
        onehot = F.one_hot(idx, self.n_codes).to(flat.dtype)
        counts = onehot.sum(0)
        if self.training:
            with torch.no_grad():
                self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.ema_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
                n = self.ema_count.sum()
                smoothed = (self.ema_count + self.eps) / (n + self.n_codes * self.eps) * n  # Laplace smoothing
                self.codebook.copy_(self.ema_sum / smoothed[:, None])
                self.usage.add_(counts)
                self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
                dead = (self.idle_steps > self.restart_after).nonzero().flatten()
                if len(dead):  # restart dead codes at random encoder outputs of this batch
                    pick = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
                    self.codebook[dead] = pick
                    self.ema_sum[dead] = pick
                    self.ema_count[dead] = 1.0
                    self.idle_steps[dead] = 0
        q = self.codebook[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        probs = counts / counts.sum()
        stats = {"perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()),
                 "codes_used": (counts > 0).float().mean()}
        return z + (q - z).detach(), idx.view(b, h, w), stats


class CodePrior(nn.Module):
    """p(codes) = Π p(c_i | c_<i) over the code grid in raster order, by a one-layer GRU."""

    def __init__(self, n_codes: int, width: int = 128) -> None:
        super().__init__()
        self.n_codes = n_codes
        self.embed = nn.Embedding(n_codes + 1, width)  # the extra token starts every sequence
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, n_codes)

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-sequence negative log-likelihood of codes (B, L), in nats."""
        start = torch.full((len(codes), 1), self.n_codes, device=codes.device, dtype=torch.long)
        h, _ = self.rnn(self.embed(torch.cat([start, codes[:, :-1]], 1)))
        logits = self.head(h).float()  # fp32 under bf16 autocast
        return F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        device = self.head.weight.device
        tok = torch.full((n, 1), self.n_codes, device=device, dtype=torch.long)
        state, out = None, []
        for _ in range(length):
            h, state = self.rnn(self.embed(tok), state)
            probs = torch.softmax(self.head(h[:, -1]).float() / temperature, -1)
            tok = torch.multinomial(probs, 1, generator=generator)
            out.append(tok)
        return torch.cat(out, 1)


@dataclass
class VQVAEConfig(ModelConfig):
    """Settings of the VQ-VAE."""

    n_codes: int = setting(128, "codebook size", min=2, max=65536)
    code_dim: int = setting(32, "size of each codeword", min=1, max=4096)
    channels: tuple[int, ...] = setting((32, 64), "conv channels per stride-2 stage", min=1)
    commitment: float = setting(0.25, "commitment cost", min=0)
    decay: float = setting(0.99, "EMA decay of the codebook", min=0, below=1)
    likelihood: str = setting("bernoulli", "decoder likelihood", choices=LIKELIHOODS)
    prior_width: int = setting(128, "width of the GRU prior over codes", min=1, max=8192)
    restart_after: int = setting(200, "steps a code may go unused before it restarts", min=1)

    def check(self) -> None:
        super().check()
        if len(self.input_shape) != 3:
            raise SettingError("input_shape", f"must be an image shape (channels, height, width) for vqvae; got "
                               f"samples of shape {list(self.input_shape)}")


@register("vqvae", VQVAEConfig, task="generate")
class VQVAE(Body):
    """Conv encoder → (B, D, h, w) → nearest of ``n_codes`` codewords → conv decoder; plus a code prior."""

    # Encoder codes, decoder outputs and prior logits are cast to fp32; the quantiser runs without autocast. auto
    # picks bf16 as for every conv Body (prefers_bf16): measured 1.12-1.29x a step on MNIST, test loss within the
    # fp32 seed spread (docs/results.md, issue 22).
    bf16_ready = True

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        input_shape, channels, code_dim, n_codes = cfg.input_shape, cfg.channels, cfg.code_dim, cfg.n_codes
        self.setup_io(input_shape=input_shape, likelihood=cfg.likelihood)
        self.arch = "conv"
        self.commitment = cfg.commitment
        c, h, w = input_shape
        depth = max(1, conv_depth((h, w), len(channels)))
        sizes = conv_sizes((h, w), depth)
        self.grid = sizes[-1]
        chans = list(channels[:depth])
        enc: list[nn.Module] = []
        prev = c
        for ch in chans:
            enc += [nn.Conv2d(prev, ch, 4, 2, 1), nn.ReLU()]
            prev = ch
        enc.append(nn.Conv2d(prev, code_dim, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(code_dim, chans[-1], 3, 1, 1), nn.ReLU()]
        rev = chans[::-1]
        for i in range(depth):
            cout = rev[i + 1] if i + 1 < depth else c
            (ih, iw), (oh, ow) = sizes[depth - i], sizes[depth - i - 1]
            dec.append(nn.ConvTranspose2d(rev[i], cout, 4, 2, 1, output_padding=(oh - 2 * ih, ow - 2 * iw)))
            if i + 1 < depth:
                dec.append(nn.ReLU())
        self.decoder = nn.Sequential(*dec, nn.Flatten())
        self.quantizer = EMAQuantizer(n_codes, code_dim, decay=cfg.decay, restart_after=cfg.restart_after)
        self.prior = CodePrior(n_codes, cfg.prior_width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flattened quantised code vectors for maps and probes, code indices (B, h, w))."""
        z = self.encoder(x.flatten(1).view(-1, *self.input_shape)).float()
        was = self.quantizer.training
        self.quantizer.eval()  # encoding never moves the codebook
        with full_precision():  # nearest codewords from fp32 distances
            q, idx, _ = self.quantizer(z)
        self.quantizer.train(was)
        return q.flatten(1), idx

    def codebook_usage(self) -> torch.Tensor:
        return self.quantizer.usage

    def decode_codes(self, idx: torch.Tensor) -> torch.Tensor:
        q = self.quantizer.codebook[idx].permute(0, 3, 1, 2)
        return self.output_mean(self.decoder(q).float())

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(self.encode(x)[1])

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.x.flatten(1)
        z = self.encoder(x.view(-1, *self.input_shape)).float()
        with full_precision():
            q, idx, stats = self.quantizer(z)
        rec = self.recon_nll(self.decoder(q).float(), x)
        commit = (z - q.detach()).square().sum((1, 2, 3))
        prior = self.prior.nll(idx.flatten(1).detach())
        total = rec + self.commitment * commit + prior
        return {"loss": total.mean(), "recon": rec.mean(), "commit": commit.mean(), "prior_nll": prior.mean(), **stats}

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Codes from the learned prior, then decoded."""
        h, w = self.grid
        idx = self.prior.sample(n, h * w, generator=self._generator(seed), temperature=temperature)
        return self.decode_codes(idx.view(n, h, w))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.recon_nll(self.decoder(self.quantizer.codebook[self.encode(x)[1]].permute(0, 3, 1, 2)).float(), x)
