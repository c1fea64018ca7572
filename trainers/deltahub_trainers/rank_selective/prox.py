"""The proximal step and the threshold schedule of rank-selective LoRA (pure)."""

from __future__ import annotations

import torch


def soft_threshold(w: torch.Tensor, tau: float) -> torch.Tensor:
    """argmin_x 0.5 ||x - w||^2 + tau ||x||_1: shrink every entry towards 0 by tau, zeroing what crosses it."""
    return torch.sign(w) * torch.clamp(w.abs() - tau, min=0.0)


def l1_weight(step: int, total: int, *, dense_steps: int, l1: float) -> float:
    """0 during the dense phase, then rising linearly to ``l1`` at the last step."""
    if step < dense_steps:
        return 0.0
    ramp = max(1, total - dense_steps)
    return l1 * min(1.0, (step - dense_steps + 1) / ramp)
