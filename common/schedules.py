"""Noise schedules and the forward process q(x_t | x_0).

THE TIMESTEP CONVENTION (one for the whole repository)
    Timesteps are integers t in {1, ..., T}. Every schedule tensor has length T + 1 and
    is indexed by t itself; index 0 stands for the clean image: beta[0] = 0,
    alpha[0] = alpha_bar[0] = 1. So alpha_bar[t - 1] is always ᾱ_{t-1}, also at t = 1.
    Networks see the normalised time t / T (the handout writes ε_θ(x_t, t) and leaves the encoding to us).
"""
import math
from dataclasses import dataclass

import torch


@dataclass
class Schedule:
    beta: torch.Tensor        # (T + 1,) beta[t] = β_t, beta[0] = 0
    alpha: torch.Tensor       # (T + 1,) α_t = 1 − β_t
    alpha_bar: torch.Tensor   # (T + 1,) ᾱ_t = ∏_{s=1}^t α_s, alpha_bar[0] = 1

    @property
    def T(self):
        return len(self.beta) - 1

    def to(self, device):
        return Schedule(self.beta.to(device), self.alpha.to(device), self.alpha_bar.to(device))


def schedule_from_beta(beta_1_to_T):
    """Pad β_1..β_T with β_0 = 0 and derive α and ᾱ (float64 cumprod, stored as float32)."""
    beta = torch.cat([torch.zeros(1, dtype=torch.float64), beta_1_to_T.double()])
    alpha = 1.0 - beta
    # Handout D §2.2: ᾱ_t = ∏_{s=1}^t α_s
    alpha_bar = torch.cumprod(alpha, dim=0)
    assert alpha_bar[0] == 1.0 and torch.all(alpha_bar[1:] < 1.0)
    return Schedule(beta.float(), alpha.float(), alpha_bar.float())


def ddpm_schedule(T=300, beta_1=1e-4, beta_T=0.02, device="cpu"):
    """Handout D §2.2: β evenly spaced from β_1 = 1e-4 to β_T = 0.02, α_t = 1 − β_t, ᾱ = cumprod(α).

    The handout's list "of length T with β_0 = 0.0001" counts from 0; its first entry is our β_1, the
    first noising step, because index 0 here is the clean image (the convention above): same T values."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return schedule_from_beta(torch.linspace(beta_1, beta_T, T, dtype=torch.float64)).to(device)


def cosine_schedule(T=50, s=0.008, device="cpu"):
    """Handout E Eq. 14 (Nichol & Dhariwal 2021): ᾱ_t = f(t) / f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2).

    α_t = clip(ᾱ_t / ᾱ_{t−1}, 0.001, 1), β_t = 1 − α_t; ᾱ is then the cumulative product
    of the clipped α (Eq. 17), equal to Eq. 14 wherever the clip is inactive. For T >= 2 it is
    active only at t = T, where Eq. 14 gives ᾱ_T = f(T)/f(0) ≈ 0 (f(T) = cos²(π/2)): the clip
    makes ᾱ_T = 0.001 ᾱ_{T−1} > 0 instead (T = 50: 9.7e-7), so 1/√ᾱ_T in x̂_0 stays finite.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2
    alpha_bar_eq14 = f / f[0]
    alpha = (alpha_bar_eq14[1:] / alpha_bar_eq14[:-1]).clamp(0.001, 1.0)
    return schedule_from_beta(1.0 - alpha).to(device)


def check_timestep(t, sched):
    """The convention above, asserted where a sampler takes one Python-int step t: 1 <= t <= T (t = 0 would
    silently read ᾱ_{−1} = ᾱ_T through Python's negative indexing)."""
    assert 1 <= t <= sched.T, f"timesteps run 1..T = {sched.T} (common/schedules.py), got t = {t}"


def gather(values, t, ndim=4):
    """values[t] reshaped to broadcast against a (B, C, H, W) batch; t is (B,) int64."""
    return values[t].reshape(-1, *([1] * (ndim - 1)))


def ddpm_forward(x0, t, alpha_bar, eps):
    """Handout D Algorithm 1, line 6 (and Algorithm 3, line 8): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
    ab = gather(alpha_bar, t, x0.ndim)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps


def sample_timesteps(batch_size, T, device, generator=None):
    """Handout D Algorithm 1, line 4: t ~ Uniform({1, ..., T})."""
    return torch.randint(1, T + 1, (batch_size,), device=device, generator=generator)
