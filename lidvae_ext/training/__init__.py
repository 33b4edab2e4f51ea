"""Training: the loop (:mod:`.loop`), its settings (:mod:`.config`), early stopping
(:mod:`.early_stopping`), data parallelism (:mod:`.distributed`) and progress (:mod:`.progress`).

Checkpoint files are :mod:`lidvae_ext.checkpoint`'s; models come from the families.
"""

from .config import TrainConfig, TrainResult
from .distributed import DistInfo, barrier, current_dist, default_num_threads, init_distributed
from .early_stopping import EarlyStopping, validation_loss
from .loop import Checkpointer, finite_parameters, held_out_active_units, train

__all__ = ["Checkpointer", "DistInfo", "EarlyStopping", "TrainConfig", "TrainResult", "barrier", "current_dist",
           "default_num_threads", "finite_parameters", "held_out_active_units", "init_distributed", "train",
           "validation_loss"]
