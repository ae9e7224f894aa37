"""Experiment protocols (pure: no I/O, no printing): the real-data protocol, the lam rule, aggregation."""

from __future__ import annotations

__all__ = ["lam_rule"]


def lam_rule(c: float, num_instances: int, num_classes: int) -> float:
    """``K N lam = 1 - c``: the teacher halves own-label (within-class) directions.

    ``c`` is the mean within-class cosine similarity of the training features
    (the fitted block model's ``c``); then the block model's within-class
    shrink factor is ``a = s_w / (s_w + K N lam) = 1/2``. Uses the features
    only, never the labels.
    """
    if not (c < 1.0):
        raise ValueError(f"within-class similarity c = {c} >= 1: the block rule K N lam = 1 - c needs c < 1")
    return (1.0 - c) / (num_classes * num_instances)
