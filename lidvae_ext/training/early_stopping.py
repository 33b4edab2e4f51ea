"""Early stopping on a held-out −ELBO: the score, the patience counter and the best weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def validation_loss(model: nn.Module, x: Tensor, seed: int = 0, batch_size: int = 1024) -> float:
    """−ELBO (β = 1, one sample, noise seeded by ``seed``) of ``model`` on prepared ``x``: the early-stopping score."""
    was = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(int(seed))
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            terms = model.loss_terms(xb, model.draw_noise(xb, gen))
            total += float((terms["rec"] + terms["kl"]).double().sum())
    finally:
        model.train(was)
    return total / max(1, x.shape[0])


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of ``model``'s state dict (the best epoch's weights survive later steps)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class EarlyStopping:
    """Stop when the validation score has not improved for ``patience`` epochs; keep the best weights."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    stopped: int | None = None
    best_state: dict[str, Tensor] | None = None

    @staticmethod
    def check_patience(patience: Any) -> None:
        """``ValueError`` unless ``patience`` is a positive integer or None."""
        if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
            raise ValueError(f"early_stopping (patience) must be a positive integer or None, got {patience!r}")

    def update(self, loss: float, epoch: int, model: nn.Module) -> None:
        """Score epoch ``epoch`` (1-based): keep the weights if it is the best, else count it stale."""
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale, self.best_state = loss, epoch, 0, cpu_state(model)
        else:
            self.stale += 1
        if self.stale >= self.patience:
            self.stopped = epoch

    def state(self) -> dict[str, Any]:
        """The checkpoint entry ``early_stopping`` (resumable)."""
        return {"patience": self.patience, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "stale": self.stale, "stopped": self.stopped, "best_state": self.best_state}

    def load(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``early_stopping`` entry."""
        self.best_loss, self.best_epoch = float(saved["best_loss"]), int(saved["best_epoch"])
        self.stale, self.stopped, self.best_state = int(saved["stale"]), saved["stopped"], saved["best_state"]
