"""Low-rank factoring of a delta by truncated SVD. Pure torch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltahub.errors import InvalidInputError


def check_target(rank: int | None, energy: float | None) -> None:
    if rank is not None and rank < 0:
        raise InvalidInputError(f"rank must be positive, got {rank}")
    if energy is not None and not (0.0 < energy <= 1.0):
        raise InvalidInputError(f"energy must be in (0, 1], got {energy}")
    if rank and energy:
        raise InvalidInputError("give a rank or an energy target, not both")


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with sum(s[:r]^2) >= energy * sum(s^2) (at least 1).

    Args:
        singular_values: descending singular values.
        energy: share of the squared Frobenius norm to keep, in (0, 1].
    Returns:
        the rank.
    """
    power = singular_values.double() ** 2
    total = power.sum()
    if total == 0:
        return 1
    cumulative = torch.cumsum(power, 0) / total
    # a tolerance so that energy=1.0 is met despite rounding in the cumsum
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64) - 1e-12).item()) + 1


@dataclass(frozen=True)
class Factored:
    """delta ~= B @ A with B: (out, r), A: (r, in)."""

    A: torch.Tensor
    B: torch.Tensor
    error_sq: float  # ||delta - B @ A||_F^2
    norm_sq: float   # ||delta||_F^2

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def relative_error(self) -> float:
        return (self.error_sq / self.norm_sq) ** 0.5 if self.norm_sq > 0 else 0.0


def factor(delta: torch.Tensor, *, rank: int | None = None, energy: float | None = None) -> Factored:
    """Truncated SVD of a 2-D delta; the singular values are split evenly
    (sqrt into each factor) so both factors have comparable scale.

    Args:
        delta: (out, in) tensor.
        rank: keep this many components (clipped to min(out, in)).
        energy: or keep the fewest components holding this share of energy.
    Returns:
        the factors and the squared errors needed to report relative error.
    """
    if delta.ndim != 2:
        raise InvalidInputError(f"low-rank factoring needs a 2-D delta, got shape {list(delta.shape)}")
    check_target(rank, energy)
    work = delta.to(torch.float32)
    if not bool(torch.isfinite(work).all()):
        raise InvalidInputError(
            "a delta to factor holds NaN or Inf (weights that cancel out or overflow, such as ones summing "
            "to 0 under a method that divides by their sum?); change the weights or the method"
        )
    try:
        U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    except torch.linalg.LinAlgError:  # float32 did not converge on an ill-conditioned delta: float64 does
        U, S, Vh = (x.to(torch.float32) for x in torch.linalg.svd(work.double(), full_matrices=False))
    if energy:
        r = rank_for_energy(S, energy)
    elif rank:
        r = min(rank, S.numel())
    else:
        r = S.numel()
    root = S[:r].sqrt()
    B = U[:, :r] * root
    A = root[:, None] * Vh[:r]
    norm_sq = float((S.double() ** 2).sum())
    error_sq = float((S[r:].double() ** 2).sum())
    return Factored(A.contiguous(), B.contiguous(), error_sq, norm_sq)
