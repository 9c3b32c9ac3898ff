"""Deep clustering by self-training an encoder's codes: DEC (Xie et al. 2016, https://arxiv.org/abs/1511.06335)
and IDEC (Guo et al. 2017, https://www.ijcai.org/proceedings/2017/0243), which keeps the autoencoder's own
loss beside the clustering one so the codes keep what the data looks like.

Each code z is softly assigned to cluster centres μ by a Student-t kernel, q ∝ (1 + ‖z − μ‖²/α)^(−(α+1)/2);
the target p = q² / (cluster frequency), renormalised, sharpens confident assignments; the encoder and the
centres descend KL(p ‖ q). The target is recomputed from every row after each epoch, and training stops once
fewer than ``tol`` of the rows changed cluster in an epoch (DEC's rule). Not a registered model:
it wraps a trained one (``latentforge cluster RUN --refine``) and is trained by the one trainer, which hands it
the rows' indices as ``batch.y`` (to look up their targets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import Batch, Model


class DeepClustering(Model):
    """DEC (``gamma=0``) or IDEC (``gamma > 0``: plus ``gamma`` × the wrapped model's own loss) over ``base``'s codes."""

    registry_name = "dec"
    uses_labels = True  # batch.y: row indices into the target distribution

    def __init__(self, base: Model, centres: np.ndarray, *, alpha: float = 1.0, gamma: float = 0.1,
                 batch_size: int = 1024, tol: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(tol) <= 1.0:
            raise ValueError(f"tol is a share of rows, between 0 and 1; got {tol}")
        self.base = base
        self.centres = nn.Parameter(torch.as_tensor(np.asarray(centres, np.float32)))
        self.alpha, self.gamma, self.batch_size, self.tol = float(alpha), float(gamma), int(batch_size), float(tol)
        self.changed = 1.0  # share of rows whose cluster changed at the last target update
        self.register_buffer("target", torch.empty(0, len(centres)), persistent=False)
        self.assignments: np.ndarray | None = None
        self.config = {"alpha": self.alpha, "gamma": self.gamma, "k": len(centres)}

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.encode(x)[0].flatten(1)

    def soft_assign(self, z: torch.Tensor) -> torch.Tensor:
        """q: each row's Student-t similarity to each centre, normalised over centres."""
        d2 = torch.cdist(z, self.centres).pow(2)
        logits = -(self.alpha + 1) / 2 * torch.log1p(d2 / self.alpha)
        return torch.softmax(logits, dim=1)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        q = self.soft_assign(self.codes(batch.x))
        p = self.target[batch.y]
        kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum(1).mean()
        out = {"loss": kl, "kl": kl}
        if self.gamma > 0:
            own = self.base.loss(Batch(batch.x, None))["loss"]
            out = {"loss": kl + self.gamma * own, "kl": kl, "model_loss": own}
        return out

    @torch.no_grad()
    def predict_proba(self, data) -> torch.Tensor:
        """q for every row of a :class:`~latentforge.data.Dataset`, in batches."""
        was = self.training
        self.eval()
        device = self.centres.device
        out = []
        for x in data.chunks(self.batch_size):
            out.append(self.soft_assign(self.codes(torch.from_numpy(x).to(device))).cpu())
        self.train(was)
        return torch.cat(out)

    def _update_target(self, data) -> float:
        """p from q on every row; returns the share of rows whose cluster changed since the last update."""
        q = self.predict_proba(data)
        weight = q.pow(2) / q.sum(0)
        self.target = (weight / weight.sum(1, keepdim=True)).to(self.centres.device)
        labels = q.argmax(1).numpy()
        self.changed = 1.0 if self.assignments is None else float(np.mean(labels != self.assignments))
        self.assignments = labels
        return self.changed

    def prepare(self, data) -> None:
        self._update_target(data)  # the wrapped model's own statistics stay as trained

    def on_epoch_end(self, epoch: int, train, run_dir: Path | None) -> dict[str, float]:
        return {"changed": self._update_target(train)}

    def finished(self) -> bool:
        return self.changed < self.tol
