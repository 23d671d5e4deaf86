"""Noise schedules and the forward process q(x_t | x_0) (q_sample).

THE TIMESTEP CONVENTION (one for the whole repository)
    Timesteps are integers t in {1, ..., T}. Every schedule tensor has length T + 1 and is indexed by t
    itself; index 0 stands for the clean image: beta[0] = 0, alpha[0] = alpha_bar[0] = 1. So alpha_bar[t - 1]
    is ᾱ_{t−1}, also at t = 1. Networks see the normalised time t / T (the handouts write ε_θ(x_t, t) and
    leave the encoding to us). The schedule is kept in float64 on the CPU: the samplers form their
    coefficients from it in double precision (1 − ᾱ_t in float32 loses digits when ᾱ_t is close to 1).
"""
import math
from dataclasses import dataclass

import torch


@dataclass
class Schedule:
    beta: torch.Tensor        # (T + 1,) β_t, beta[0] = 0
    alpha: torch.Tensor       # (T + 1,) α_t = 1 − β_t
    alpha_bar: torch.Tensor   # (T + 1,) ᾱ_t = ∏_{s=1}^t α_s, alpha_bar[0] = 1

    @property
    def T(self):
        return len(self.beta) - 1

    def at(self, t):
        """β_t, α_t, ᾱ_t and ᾱ_{t−1} as Python floats (double precision), for one step t in 1..T."""
        assert 1 <= t <= self.T, f"timesteps run 1..T = {self.T} (common/schedules.py), got t = {t}"
        return self.beta[t].item(), self.alpha[t].item(), self.alpha_bar[t].item(), self.alpha_bar[t - 1].item()


def schedule_from_beta(beta_1_to_T):
    """β_1..β_T padded with β_0 = 0; α and ᾱ derived from it."""
    beta = torch.cat([torch.zeros(1, dtype=torch.float64), beta_1_to_T.double()])
    alpha = 1.0 - beta
    # Handout D §2.2: ᾱ_t = ∏_{s=1}^t α_s
    alpha_bar = torch.cumprod(alpha, dim=0)
    assert alpha_bar[0] == 1.0 and torch.all(alpha_bar[1:] < 1.0)
    return Schedule(beta, alpha, alpha_bar)


def ddpm_schedule(T=300, beta_1=1e-4, beta_T=0.02):
    """Handout D §2.2: β evenly spaced from β_1 = 1e-4 to β_T = 0.02, α_t = 1 − β_t, ᾱ = cumprod(α).

    The handout's list "of length T with β_0 = 0.0001" counts from 0; its first entry is our β_1, the first
    noising step, because index 0 here is the clean image (the convention above): the same T values."""
    return schedule_from_beta(torch.linspace(beta_1, beta_T, T, dtype=torch.float64))


def cosine_schedule(T=50, s=0.008):
    """Handout E Eq. 14 (Nichol & Dhariwal 2021): ᾱ_t = f(t) / f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2),
    α_t = clip(ᾱ_t / ᾱ_{t−1}, 0.001, 1), β_t = 1 − α_t. ᾱ is then the product of the clipped α (Eq. 17),
    equal to Eq. 14 where the clip is inactive: for T >= 2 only at t = T, where Eq. 14's ᾱ_T = 0 becomes
    0.001 ᾱ_{T−1} > 0, so that 1/√ᾱ_T in x̂_0 stays finite."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2
    alpha_bar_eq14 = f / f[0]
    alpha = (alpha_bar_eq14[1:] / alpha_bar_eq14[:-1]).clamp(0.001, 1.0)
    return schedule_from_beta(1.0 - alpha)


def q_sample(x0, t, alpha_bar, eps):
    """A sample of q(x_t | x_0) (Handout E's q_sample, Eq. 13; Handout D Algorithm 1, line 6):
    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. t is (B,) int64; alpha_bar is the schedule's ᾱ on x0's device (float32 for
    training). Handout D's `q_sample` is more: the whole training step around this line, in 01 and 02."""
    ab = alpha_bar[t].reshape(-1, *[1] * (x0.ndim - 1)).to(x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
