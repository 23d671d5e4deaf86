"""Reverse-process samplers, side by side so that their differences show:

    ddpm_sample                Handout D Algorithm 2 (also Handout C's Algorithm 18.2, and Handout E's
                               p_sample_loop: one loop iteration is its p_sample, step_sigma and Schedule.at its
                               extract)
    ddpm_cfg_sample            Handout D Algorithm 4 (the handout's `ddpm_cfg_sample`): classifier-free guidance
    classifier_guided_sample   Algorithm 2 with the mean shifted by s·Σ_t·∇ log p(y | x_t, t) (Handouts A 2(c), C 3)
    ddim_sample                DDIM (Song, Meng & Ermon 2021, https://arxiv.org/abs/2010.02502), beyond the handouts
    draw_samples               any of them over many x_T, in batches, as the scripts' flags choose (--sampler …)

Timestep convention: common/schedules.py (t in 1..T). Each sampler takes the starting noise x_T from its
caller, so grids drawn from the same x_T are comparable, and an optional torch.Generator for the per-step
noise z. Each puts the model in eval mode (BatchNorm then uses its running statistics). `sigma=` picks σ_t:
"beta" is √β_t (Handout D, Handout C), "posterior" is √β̃_t (Handout E). Inside the loops nothing is copied
between the host and the device: what does not depend on t is made on the device once, before the loop.
"""
import math

import torch

from .run import autocast, memory_format


def fixed_noise(n, seed, device, shape=(1, 28, 28)):
    """x_T ~ N(0, I) from its own seeded generator, drawn on the CPU: the same noise on every device."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def posterior_mean(xt, eps_pred, t, sched, clip_x0=False):
    """Handout D Algorithm 2, lines 10–11 without the noise term; the coefficients in double precision."""
    beta_t, alpha_t, alpha_bar_t, alpha_bar_prev = sched.at(t)
    # line 10: x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t
    x0_hat = (xt - math.sqrt(1 - alpha_bar_t) * eps_pred) / math.sqrt(alpha_bar_t)
    if clip_x0:   # Handout E Algorithm 2, line 6: x̂_0 ← clamp(x̂_0, −1, 1)
        x0_hat = x0_hat.clamp(-1, 1)
    # line 11: μ = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x̂_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
    coef_x0 = math.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
    coef_xt = math.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return coef_x0 * x0_hat + coef_xt * xt


def step_sigma(sched, t, sigma="beta"):
    """σ_t of step t: 'beta' is √β_t (Handout D Algorithm 2 line 11, Handout C 1); 'posterior' is √β̃_t, the
    standard deviation of q(x_{t−1} | x_t, x_0), β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (Handout E Eq. 18)."""
    beta_t, _, alpha_bar_t, alpha_bar_prev = sched.at(t)
    return math.sqrt(beta_t if sigma == "beta" else (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t)


def noise(xt, t, generator):
    """Algorithm 2, lines 4–8: z ~ N(0, I) if t > 1, else z = 0."""
    return torch.randn(xt.shape, device=xt.device, generator=generator) if t > 1 else torch.zeros_like(xt)


def start(model, x):
    model.eval()
    return x.float().contiguous(memory_format=memory_format(x.device))


@torch.no_grad()
def ddpm_sample(model, x_T, sched, t_start=None, t_end=1, sigma="beta", clip_x0=False, generator=None):
    """Handout D Algorithm 2: the reverse steps t = T, ..., 1 from x_T. Handout C 2 (merging) starts at some
    t_start < T from z_t; Handout E 7.5 stops at t_end to show x_{t_end − 1}. `sigma` picks σ_t."""
    xt = start(model, x_T)
    for t in range(t_start or sched.T, t_end - 1, -1):              # line 3: t = T, ..., 1
        z = noise(xt, t, generator)                                   # lines 4–8
        t_frac = torch.full((len(xt),), t / sched.T, device=xt.device)
        with autocast(xt.device):
            eps_pred = model(xt, t_frac).float()                      # line 9: ε̂ = ε_θ(x_t, t)
        # lines 10–11: x_{t−1} = μ(x_t, x̂_0) + σ_t z
        xt = posterior_mean(xt, eps_pred, t, sched, clip_x0) + step_sigma(sched, t, sigma) * z
    return xt


def guidance_scale(gamma, device):
    """γ (or s) as the sampling loop uses it, made once before the loop: a Python float, or per-sample scales as a
    (B, 1, 1, 1) tensor on the device."""
    return gamma.to(device, torch.float32).reshape(-1, 1, 1, 1) if torch.is_tensor(gamma) else float(gamma)


def cfg_eps(model, xt, t_frac, c, gamma):
    """Handout D Algorithm 4, lines 11–13. c: (B, K) one-hot on xt's device; gamma: a float, or a tensor of one γ
    per sample on the device (guidance_scale). γ = 0 is unconditional and γ = 1 conditional; each needs one prediction,
    so each is one pass. Any other γ takes ε_cond and ε_uncond from ONE batched pass over [c; 0]."""
    if not torch.is_tensor(gamma) and gamma in (0.0, 1.0):
        return model(xt, t_frac, gamma * c).float()                  # γ = 0: line 12 alone; γ = 1: line 11 alone
    eps = model(torch.cat([xt, xt]), torch.cat([t_frac, t_frac]), torch.cat([c, torch.zeros_like(c)])).float()
    eps_cond, eps_uncond = eps.chunk(2)                               # lines 11 and 12: c, and the zero vector 0
    if torch.is_tensor(gamma):
        gamma = gamma.reshape(-1, 1, 1, 1)                            # one γ per sample
    return eps_uncond + gamma * (eps_cond - eps_uncond)               # line 13: ε̂ = ε_u + γ (ε_c − ε_u)


@torch.no_grad()
def ddpm_cfg_sample(model, x_T, c, gamma, sched, generator=None):
    """Handout D Algorithm 4 (the handout's ddpm_cfg_sample): class-conditioned sampling with classifier-free
    guidance scale γ. Ho & Salimans write ε̃ = (1 + w) ε_cond − w ε_uncond: their w is γ − 1."""
    xt = start(model, x_T)
    c, gamma = c.to(xt.device, torch.float32), guidance_scale(gamma, xt.device)   # lines 1–2, once
    for t in range(sched.T, 0, -1):                                   # line 5
        z = noise(xt, t, generator)                                   # lines 6–10
        t_frac = torch.full((len(xt),), t / sched.T, device=xt.device)
        with autocast(xt.device):
            eps_pred = cfg_eps(model, xt, t_frac, c, gamma)           # lines 11–13
        xt = posterior_mean(xt, eps_pred, t, sched) + step_sigma(sched, t) * z   # lines 14–15
    return xt


def grad_log_prob(guide, xt, t_frac, y):
    """∇_{x_t} log p(y | x_t, t) by autograd. Summing log p over the batch first is exact because each term
    depends only on its own x_t, which holds while the guide is in eval mode (train-mode BatchNorm would mix
    the samples of a batch)."""
    assert not guide.training, "put the guide in eval mode: train-mode BatchNorm mixes samples"
    with torch.enable_grad():
        x = xt.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(guide.log_prob(x, t_frac, y).float().sum(), x)
    return grad


@torch.no_grad()
def classifier_guided_sample(model, guide, x_T, y, s, sched, variance_scaled=True, sigma="beta", generator=None):
    """Algorithm 2 with the guidance shift added to each step's mean (Dhariwal & Nichol 2021). The guide
    has log_prob(x_t, t/T, y) -> (B,). s: a float or (B,) tensor; s = 0 is exactly Algorithm 2.
    variance_scaled: the shift is s·Σ_t·∇ log p, Σ_t = σ_t² (Handout A 2(c)); else s·∇ log p (Handout C 3)."""
    xt = start(model, x_T)
    guided = bool(torch.any(torch.as_tensor(s) != 0))               # once: s = 0 skips the guide's gradient
    s = guidance_scale(s, xt.device)
    for t in range(sched.T, 0, -1):
        # 1. z ~ N(0, I), or 0 on the last step
        z = noise(xt, t, generator)
        # 2. predict ε and the unguided mean μ_θ(x_t, t), as in Algorithm 2
        t_frac = torch.full((len(xt),), t / sched.T, device=xt.device)
        with autocast(xt.device):
            eps_pred = model(xt, t_frac).float()
        mean = posterior_mean(xt, eps_pred, t, sched)
        # 3. the one line that differs: μ ← μ + s Σ_t ∇_{x_t} log p(y | x_t, t)
        sigma_t = step_sigma(sched, t, sigma)
        if guided:
            mean = mean + (s * sigma_t ** 2 if variance_scaled else s) * grad_log_prob(guide, xt, t_frac, y)
        # 4. x_{t−1} = μ + σ_t z
        xt = mean + sigma_t * z
    return xt


def ddim_timesteps(T, steps):
    """`steps` timesteps from T down to 1, evenly spaced (strictly decreasing ints)."""
    return torch.linspace(T, 1, steps, dtype=torch.float64).round().long().unique(sorted=True).flip(0).tolist()


@torch.no_grad()
def ddim_sample(model, x_T, sched, steps=50, eta=1.0, c=None, gamma=1.0, clip_x0=False, generator=None):
    """DDIM, Song et al. Eq. 12: jump from x_t to x_{t'} (t' < t) in `steps` model calls. η = 1 with every
    step is the ancestral sampler with the posterior variance β̃_t; η = 0 is deterministic. With c given,
    ε̂ is Algorithm 4's guided mixture."""
    xt = start(model, x_T)
    ts = ddim_timesteps(sched.T, steps)
    if c is not None:
        c, gamma = c.to(xt.device, torch.float32), guidance_scale(gamma, xt.device)
    for t, t_prev in zip(ts, ts[1:] + [0]):
        t_frac = torch.full((len(xt),), t / sched.T, device=xt.device)
        with autocast(xt.device):
            eps_pred = model(xt, t_frac).float() if c is None else cfg_eps(model, xt, t_frac, c, gamma)
        alpha_bar_t, alpha_bar_prev = sched.alpha_bar[t].item(), sched.alpha_bar[t_prev].item()
        # 1. predicted x_0 (clamped, and ε̂ made consistent with it, when clip_x0)
        x0_hat = (xt - math.sqrt(1 - alpha_bar_t) * eps_pred) / math.sqrt(alpha_bar_t)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
            eps_pred = (xt - math.sqrt(alpha_bar_t) * x0_hat) / math.sqrt(1 - alpha_bar_t)
        # 2. σ_t(η) = η √((1 − ᾱ_{t'}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t'})
        sigma_t = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))
        # 3. x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε̂ + σ_t z
        xt = math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(max(1 - alpha_bar_prev - sigma_t ** 2, 0)) * eps_pred
        if sigma_t > 0:
            xt = xt + sigma_t * torch.randn(xt.shape, device=xt.device, generator=generator)
    return xt


def draw_samples(model, sched, x_T, seed, args, c=None, gamma=1.0, sigma="beta", clip_x0=False):
    """Samples from every x_T, --sample-batch at a time, with the sampler the flags of cli.add_sampler_flags choose
    (args: sampler, sample_steps, eta, sample_batch): Algorithm 2 (c None) or 4 (c given), or DDIM with the
    same ε̂. `seed` seeds the z's in their own generator, so the training random stream is untouched."""
    generator = torch.Generator(x_T.device).manual_seed(seed)
    samples = []
    for i in range(0, len(x_T), args.sample_batch):
        x, cb = x_T[i:i + args.sample_batch], None if c is None else c[i:i + args.sample_batch]
        if args.sampler == "ddim":
            samples.append(ddim_sample(model, x, sched, args.sample_steps, args.eta, cb, gamma, clip_x0, generator))
        elif cb is None:
            samples.append(ddpm_sample(model, x, sched, sigma=sigma, clip_x0=clip_x0, generator=generator))
        else:
            samples.append(ddpm_cfg_sample(model, x, cb, gamma, sched, generator))
    return torch.cat(samples)


def sampler_label(args, ancestral):
    """How the samples were drawn, for titles and metrics.json: `ancestral` (e.g. "Algorithm 2"), or DDIM's steps."""
    return f"DDIM, {args.sample_steps} steps, η = {args.eta:g}" if args.sampler == "ddim" else ancestral
