"""The per-instance losses of the exact solver (public face of :mod:`sdtheory._src.losses`)."""

from ._src.losses import LOSSES, Loss, check_q, get_loss, softmax

__all__ = ["LOSSES", "Loss", "check_q", "get_loss", "softmax"]
