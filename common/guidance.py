"""Classifier guidance (Dhariwal & Nichol 2021, https://arxiv.org/abs/2105.05233): steer a frozen
unconditional DDPM with the gradient of a separately trained model of p(y | x_t, t).

Handout A 2(c): shift the posterior mean by s · Σ_t · ∇_{x_t} log p_φ(y | x_t, t).
Handout C 3:    add scale · ∇_{z_t} log P(y | z_t) (no Σ_t), with P(y | z_t) = N(f(z_t, t), 1).

A guide is any module with `log_prob(xt, t_frac, y) -> (B,)`: the noisy classifier of
03_classifier_guidance.py and the age regressor of 06_faces.py both have one.
Timestep convention: see common/schedules.py.
"""
import torch

from .samplers import posterior_mean, ddpm_sigma, step_noise, time_input
from .utils import autocast, memory_format


def grad_log_prob(guide, xt, t_frac, y):
    """∇_{x_t} log p(y | x_t, t) by autograd, one gradient per sample.

    Summing log p over the batch before differentiating is exact because each term depends
    only on its own x_t, which holds as long as the guide is in eval mode (BatchNorm in
    train mode would mix the samples of a batch through its statistics).
    """
    if guide.training:
        raise RuntimeError("put the guide in eval mode: train-mode BatchNorm mixes samples")
    with torch.enable_grad():
        x = xt.detach().float().requires_grad_(True)
        log_p = guide.log_prob(x, t_frac, y).float()            # (B,)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return grad


@torch.no_grad()
def classifier_guided_sample(model, guide, x_T, y, s, sched, generator=None, sigma="beta",
                             scale_by_variance=True, clip_x0=False):
    """Handout D Algorithm 2 with the guidance shift added to each step's mean.

    s: guidance scale, a float or a (B,) tensor; s = 0 is exactly the unguided sampler.
    scale_by_variance=True multiplies the gradient by Σ_t = σ_t² (Handout A 2(c));
    False adds s · ∇ log p as it is (Handout C 3).
    """
    was_training, device = model.training, x_T.device
    model.eval()
    s = torch.as_tensor(s, device=device, dtype=torch.float32).reshape(-1, 1, 1, 1)
    xt = x_T.float().contiguous(memory_format=memory_format(device))
    for t in range(sched.T, 0, -1):
        t_frac = time_input(t, sched, len(xt), device)
        # 1. z ~ N(0, I), or 0 on the last step
        z = step_noise(xt, t, generator)
        # 2. predict ε and the unguided posterior mean μ_θ(x_t, t)
        with autocast(device):
            eps_pred = model(xt, t_frac).float()
        mean = posterior_mean(xt, t, eps_pred, sched, clip_x0)
        # 3. the guidance shift: μ ← μ + s Σ_t ∇_{x_t} log p(y | x_t, t)
        sigma_t = ddpm_sigma(sched, t, sigma)
        step_size = s * sigma_t ** 2 if scale_by_variance else s
        if torch.any(s != 0):
            mean = mean + step_size * grad_log_prob(guide, xt, t_frac, y)
        # 4. add noise
        xt = mean + sigma_t * z
    model.train(was_training)
    return xt
