"""Reverse-process samplers: Handout D Algorithm 2 (DDPM) and Algorithm 4 (classifier-free guidance).

Timestep convention: see common/schedules.py (t in {1..T}, tensors indexed by t).
Every sampler takes the starting noise x_T from the caller (so grids drawn with the same
x_T are comparable across epochs) and an optional torch.Generator for the per-step z.
"""
import torch

from .utils import autocast, memory_format


def fixed_noise(n, seed, device, shape=(1, 28, 28)):
    """x_T ~ N(0, I) drawn on the CPU from its own generator: the same seed gives the same x_T
    on every device, so grids drawn after different epochs start from the same noise."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def posterior_mean(xt, t, eps_pred, sched, clip_x0=False):
    """Handout D Algorithm 2, lines 10–11 without the noise term. t is a Python int."""
    beta_t, alpha_t = sched.beta[t], sched.alpha[t]
    ab_t, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t - 1]
    # line 10: x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t
    x0_hat = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    # line 11: μ = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x̂_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
    return (ab_prev.sqrt() * beta_t / (1 - ab_t)) * x0_hat + \
        (alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t)) * xt


def ddpm_sigma(sched, t, kind="beta"):
    """Standard deviation of the noise added at step t.

    'beta' is Handout D Algorithm 2 line 11 (and Handout C's σ_t = √β_t); 'posterior' is
    the variance of q(x_{t−1} | x_t, x_0): β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.
    """
    if kind == "beta":
        return sched.beta[t].sqrt()
    if kind == "posterior":
        return ((1 - sched.alpha_bar[t - 1]) / (1 - sched.alpha_bar[t]) * sched.beta[t]).sqrt()
    raise ValueError(f"unknown sigma kind {kind!r} (use 'beta' or 'posterior')")


def step_noise(xt, t, generator=None):
    """Handout D Algorithm 2, lines 4–8: z ~ N(0, I) if t > 1, else z = 0."""
    if t > 1:
        return torch.randn(xt.shape, device=xt.device, generator=generator)
    return torch.zeros_like(xt)


def time_input(t, sched, batch_size, device):
    """The network's time input: t / T for every sample, shape (B,)."""
    return torch.full((batch_size,), t / sched.T, device=device)


@torch.no_grad()
def ddpm_sample(model, x_T, sched, generator=None, clip_x0=False, sigma="beta"):
    """Handout D Algorithm 2: x_T ~ N(0, I), then T reverse steps down to x_0."""
    was_training, device = model.training, x_T.device
    model.eval()
    xt = x_T.float().contiguous(memory_format=memory_format(device))
    for t in range(sched.T, 0, -1):           # line 3: t = T, ..., 1
        z = step_noise(xt, t, generator)      # lines 4–8
        with autocast(device):                # line 9: ε̂ = ε_θ(x_t, t)
            eps_pred = model(xt, time_input(t, sched, len(xt), device)).float()
        # lines 10–11
        xt = posterior_mean(xt, t, eps_pred, sched, clip_x0) + ddpm_sigma(sched, t, sigma) * z
    model.train(was_training)
    return xt


def cfg_eps(model, xt, t_in, c, w):
    """Handout D Algorithm 4, lines 11–13, with both predictions in ONE batched forward pass.

    c: (B, K) one-hot; w: guidance scale γ, a float or a (B,) tensor (one γ per sample).
    """
    B = len(xt)
    keep = torch.cat([torch.ones(B, device=xt.device), torch.zeros(B, device=xt.device)])
    eps_both = model(torch.cat([xt, xt]), torch.cat([t_in, t_in]), torch.cat([c, c]), keep).float()
    eps_cond, eps_uncond = eps_both[:B], eps_both[B:]   # lines 11 and 12
    w = torch.as_tensor(w, device=xt.device, dtype=xt.dtype).reshape(-1, 1, 1, 1)
    # line 13: ε̂ = ε_uncond + γ (ε_cond − ε_uncond)
    return eps_uncond + w * (eps_cond - eps_uncond)


@torch.no_grad()
def ddpm_cfg_sample(model, x_T, c, w, sched, generator=None, clip_x0=False, sigma="beta"):
    """Handout D Algorithm 4: class-conditioned sampling with classifier-free guidance."""
    was_training, device = model.training, x_T.device
    model.eval()
    xt = x_T.float().contiguous(memory_format=memory_format(device))
    for t in range(sched.T, 0, -1):           # line 5
        z = step_noise(xt, t, generator)      # lines 6–10
        with autocast(device):
            eps_pred = cfg_eps(model, xt, time_input(t, sched, len(xt), device), c, w)
        # lines 14–15
        xt = posterior_mean(xt, t, eps_pred, sched, clip_x0) + ddpm_sigma(sched, t, sigma) * z
    model.train(was_training)
    return xt
