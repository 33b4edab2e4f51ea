"""The training progress bar (rank 0 only; ``progress=False`` turns it off)."""

from __future__ import annotations

from typing import Any


class Progress:
    """A tqdm bar of epochs with the loss, KL and held-out active units, or nothing."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=min(initial, total), desc=desc, unit="epoch", dynamic_ncols=True)

    def epoch_done(self, record: dict[str, Any], latent_dim: int) -> None:
        """Advance one epoch and show ``record``'s loss, KL and (if there) active units."""
        if self.bar is None:
            return
        self.bar.update(1)
        post = {"loss": f"{record['loss']:.2f}", "KL": f"{record['kl']:.2f}"}
        if "au" in record:
            post["AU"] = f"{record['au']}/{latent_dim}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()
