"""Exceptions that the CLI turns into one-line error messages.

Both are subclasses of built-in exceptions (``ValueError`` and
``FloatingPointError``), so code that caught those before keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CheckpointError", "RunExists", "TrainingDiverged"]


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, unsafe, malformed or mismatched.

    Raised by :func:`lidvae_ext.checkpoint.load_checkpoint`,
    :func:`lidvae_ext.checkpoint.model_from_checkpoint` and by
    :func:`lidvae_ext.training.train` with ``resume=True``. The message is one
    line, ``"<path>: <what is wrong>"``.

    Attributes
    ----------
    path : pathlib.Path or None
        The checkpoint file (None for a state dict that did not come from a file).
    reason : str
        What is wrong, without the path.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = one_line(reason)
        super().__init__(f"{self.path if self.path is not None else 'checkpoint'}: {self.reason}")


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss or non-finite weights.

    The model in memory is then unusable; the checkpoint on disk (if any) is
    the last one written before the divergence and is left untouched.

    Attributes
    ----------
    epoch : int
        The (1-based) epoch whose loss or weights were non-finite.
    loss : float or None
        That epoch's mean loss (finite when only the weights diverged; None
        when a kernel refused the non-finite weights before the epoch ended).
    checkpoint : pathlib.Path or None
        The last good checkpoint, None when this run wrote none.
    checkpoint_epoch : int or None
        The epoch that checkpoint holds.
    """

    def __init__(self, epoch: int, loss: float | None, checkpoint: str | os.PathLike | None = None,
                 checkpoint_epoch: int | None = None, what: str = "loss") -> None:
        self.epoch, self.loss = int(epoch), (None if loss is None else float(loss))
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_epoch = checkpoint_epoch
        if self.checkpoint is not None:
            kept = f"the last good checkpoint (epoch {checkpoint_epoch}) is kept at {self.checkpoint}"
        else:
            kept = "no checkpoint of this run had been written yet"
        if what == "loss":
            detail = f"non-finite loss {self.loss}"
        else:
            detail = f"non-finite {what}" + ("" if self.loss is None else f", loss {self.loss}")
        super().__init__(f"training diverged at epoch {self.epoch} ({detail}); {kept}")


class RunExists(FileExistsError):
    """An output directory already holds a checkpoint and neither resuming nor overwriting was asked for.

    Raised before anything is written, so the existing run is left as it was.

    Attributes
    ----------
    paths : list of pathlib.Path
        The checkpoint files found.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        listed = ", ".join(str(p) for p in self.paths[:3]) + (f" (+{len(self.paths) - 3} more)"
                                                               if len(self.paths) > 3 else "")
        one = len(self.paths) == 1
        super().__init__(f"{listed} {'holds a checkpoint' if one else 'hold checkpoints'} of an earlier run; "
                         "pass --resume to continue it or --overwrite to replace it (or choose another --out)")
