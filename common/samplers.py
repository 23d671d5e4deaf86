"""Reverse-process samplers: Handout D Algorithm 2 (DDPM) and Algorithm 4 (classifier-free guidance).

Timestep convention: see common/schedules.py (t in {1..T}, tensors indexed by t).
Every sampler takes the starting noise x_T from the caller (so grids drawn with the same
x_T are comparable across epochs) and an optional torch.Generator for the per-step z.
"""
import torch

from .schedules import check_timestep
from .utils import autocast, memory_format


def fixed_noise(n, seed, device, shape=(1, 28, 28)):
    """x_T ~ N(0, I) drawn on the CPU from its own generator: the same seed gives the same x_T
    on every device, so grids drawn after different epochs start from the same noise."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def noise_generator(seed, device):
    """The per-step z's of one sampling run, from their own seeded stream on `device`: with fixed_noise's
    x_T, a grid drawn again (after another epoch, or after --resume) sees exactly the same noise."""
    return torch.Generator(device=device).manual_seed(seed)


def posterior_mean(xt, t, eps_pred, sched, clip_x0=False):
    """Handout D Algorithm 2, lines 10–11 without the noise term. t is a Python int."""
    check_timestep(t, sched)
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
    check_timestep(t, sched)
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
    return ddpm_sample_from(model, x_T, sched.T, sched, generator, clip_x0, sigma)


@torch.no_grad()
def ddpm_sample_from(model, xt, t_start, sched, generator=None, clip_x0=False, sigma="beta", t_end=1):
    """Algorithm 2's reverse steps t = t_start, ..., t_end: from x_{t_start} to x_{t_end − 1}. With t_start = T
    and t_end = 1 it is the whole of Algorithm 2; Handout C 2 (merging) starts at some t < T; 07's backward
    figure stops at the steps it shows."""
    assert 1 <= t_end <= t_start <= sched.T, f"need 1 <= t_end <= t_start <= {sched.T}, got {t_end}, {t_start}"
    was_training, device = model.training, xt.device
    model.eval()
    xt = xt.float().contiguous(memory_format=memory_format(device))
    for t in range(t_start, t_end - 1, -1):   # line 3: t = T, ..., 1 (here t_start, ..., t_end)
        z = step_noise(xt, t, generator)      # lines 4–8
        with autocast(device):                # line 9: ε̂ = ε_θ(x_t, t)
            eps_pred = model(xt, time_input(t, sched, len(xt), device)).float()
        # lines 10–11
        xt = posterior_mean(xt, t, eps_pred, sched, clip_x0) + ddpm_sigma(sched, t, sigma) * z
    model.train(was_training)
    return xt


def cfg_eps(model, xt, t_frac, c, w):
    """Handout D Algorithm 4, lines 11–13, with both predictions in ONE batched forward pass.

    c: (B, K) one-hot; w: guidance scale γ, a float or a (B,) tensor (one γ per sample). γ is Handout D's:
    0 is unconditional, 1 conditional; Ho & Salimans's w (ε̃ = (1 + w) ε_cond − w ε_uncond) is γ − 1.
    """
    B = len(xt)
    keep = torch.cat([torch.ones(B, device=xt.device), torch.zeros(B, device=xt.device)])
    eps_both = model(torch.cat([xt, xt]), torch.cat([t_frac, t_frac]), torch.cat([c, c]), keep).float()
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


# --- DDIM (Song, Meng & Ermon 2021, https://arxiv.org/abs/2010.02502): beyond the handouts ---

def ddim_timesteps(T, steps):
    """`steps` timesteps evenly spaced from T down to 1 (ints, strictly decreasing)."""
    if not 1 <= steps <= T:
        raise ValueError(f"--sample-steps must be in 1..T={T}, got {steps}")
    return torch.linspace(T, 1, steps, dtype=torch.float64).round().long().unique(sorted=True).flip(0).tolist()


def ddim_step(xt, t, t_prev, eps_pred, sched, eta=0.0, z=None, clip_x0=False):
    """DDIM Eq. 12: jump from x_t to x_{t_prev} (t_prev < t; t_prev = 0 is the clean image).

    η = 0 is deterministic; η = 1 with t_prev = t − 1 is the ancestral DDPM step with the
    posterior variance β̃_t.
    """
    check_timestep(t, sched)
    assert 0 <= t_prev < t, f"DDIM jumps down to 0 <= t_prev < t, got t_prev = {t_prev}, t = {t}"
    ab_t, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t_prev]
    # 1. predicted x_0
    x0_hat = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
        eps_pred = (xt - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
    # 2. σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    # 3. x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps_pred
    return x_prev if z is None or eta == 0 else x_prev + sigma * z


@torch.no_grad()
def ddim_sample(model, x_T, sched, steps=50, eta=0.0, generator=None, c=None, w=1.0, clip_x0=False):
    """DDIM sampling in `steps` model calls; with c given, ε̂ is Algorithm 4's guided mixture."""
    was_training, device = model.training, x_T.device
    model.eval()
    xt = x_T.float().contiguous(memory_format=memory_format(device))
    ts = ddim_timesteps(sched.T, steps)
    for t, t_prev in zip(ts, ts[1:] + [0]):
        t_frac = time_input(t, sched, len(xt), device)
        with autocast(device):
            eps_pred = model(xt, t_frac).float() if c is None else cfg_eps(model, xt, t_frac, c, w)
        z = torch.randn(xt.shape, device=device, generator=generator) if eta > 0 and t_prev > 0 else None
        xt = ddim_step(xt, t, t_prev, eps_pred, sched, eta, z, clip_x0)
    model.train(was_training)
    return xt


def sampler_label(args, ancestral):
    """How the --sampler flags draw samples, for figure titles and metrics.json: `ancestral` (e.g. "Algorithm 2")
    or DDIM's settings."""
    return f"DDIM, {args.sample_steps} steps, η = {args.eta:g}" if args.sampler == "ddim" else ancestral


def generate(model, x_T, sched, sampler="ddpm", steps=50, eta=0.0, c=None, w=1.0, generator=None, clip_x0=False,
             sigma="beta"):
    """The scripts' one entry point: `--sampler ddpm` (Algorithm 2, or 4 when c is given; σ_t by `sigma`) or
    `--sampler ddim --sample-steps N --eta η`. clip_x0 clamps x̂0 to [-1, 1] in either (07 does)."""
    if sampler == "ddim":
        return ddim_sample(model, x_T, sched, steps, eta, generator, c, w, clip_x0)
    if c is None:
        return ddpm_sample(model, x_T, sched, generator, clip_x0, sigma)
    return ddpm_cfg_sample(model, x_T, c, w, sched, generator, clip_x0, sigma)
