"""Samplers: Algorithm 2's step against the DDPM paper's ε-form, z = 0 on the last step,
convergence to a known target (a point, and a Gaussian spread), classifier-free guidance's limits
and its extrapolation, and DDIM against the ancestral sampler and the closed-form posterior."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.samplers import (cfg_eps, ddim_sample, ddim_step, ddim_timesteps, ddpm_cfg_sample, ddpm_sample, generate,
                             ddpm_sigma, posterior_mean)
from common.schedules import Schedule, ddpm_schedule
from conftest import ConditionalPointMass, PointMassDenoiser
from common.unet import ConditionalDenoisingUNet


class GaussianDenoiser(nn.Module):
    """The exact ε-predictor when every pixel of x_0 is drawn from N(0, sd²):
    E[ε | x_t] = √(1 − ᾱ_t)·x_t / (ᾱ_t·sd² + 1 − ᾱ_t).
    A sampler driven by it must draw N(0, sd²) again."""

    def __init__(self, sd, sched):
        super().__init__()
        self.sd, self.sched = sd, sched

    def forward(self, xt, t_frac, *cond):
        t = (t_frac * self.sched.T).round().long()
        ab = self.sched.alpha_bar[t].reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * xt / (ab * self.sd ** 2 + 1 - ab)


def test_posterior_mean_equals_the_eps_form():
    # Ho et al. (2020) Eq. 11: μ = (x_t − β_t/√(1 − ᾱ_t) ε) / √α_t, algebraically equal to line 11
    beta = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 300)]).double()  # float64: no cancellation
    s = Schedule(beta, 1 - beta, torch.cumprod(1 - beta, 0))
    xt, eps = torch.randn(4, 1, 5, 5).double(), torch.randn(4, 1, 5, 5).double()
    for t in (1, 2, 77, 300):
        expected = (xt - s.beta[t] / (1 - s.alpha_bar[t]).sqrt() * eps) / s.alpha[t].sqrt()
        torch.testing.assert_close(posterior_mean(xt, t, eps, s), expected, atol=1e-10, rtol=1e-10)


def test_last_step_adds_no_noise():
    s = ddpm_schedule(1)   # a single step: t = 1, where Algorithm 2 sets z = 0
    model, x_T = PointMassDenoiser(torch.tensor(0.3), s), torch.randn(3, 1, 4, 4)
    a = ddpm_sample(model, x_T, s, generator=torch.Generator().manual_seed(1))
    b = ddpm_sample(model, x_T, s, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, posterior_mean(x_T, 1, model(x_T, torch.ones(3)), s))


def test_sampler_reaches_the_target_of_a_perfect_denoiser():
    torch.manual_seed(0)
    s = ddpm_schedule(50)
    target = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x0 = ddpm_sample(PointMassDenoiser(target, s), torch.randn(8, 1, 4, 4), s)
    torch.testing.assert_close(x0, target.expand_as(x0), atol=1e-3, rtol=0)


def test_sigma_choices():
    s = ddpm_schedule(10)
    torch.testing.assert_close(ddpm_sigma(s, 5), s.beta[5].sqrt())
    post = (1 - s.alpha_bar[4]) / (1 - s.alpha_bar[5]) * s.beta[5]
    torch.testing.assert_close(ddpm_sigma(s, 5, "posterior"), post.sqrt())
    assert ddpm_sigma(s, 1, "posterior") == 0   # β̃_1 = 0: nothing to add at the last step


def test_cfg_limits_gamma_1_is_conditional_gamma_0_unconditional():
    torch.manual_seed(0)
    model = ConditionalDenoisingUNet(hidden=8).eval()
    xt, t = torch.randn(3, 1, 28, 28), torch.full((3,), 0.5)
    c = F.one_hot(torch.tensor([1, 4, 9]), 10)
    with torch.no_grad():
        eps_c, eps_u = model(xt, t, c, torch.ones(3)), model(xt, t, c, torch.zeros(3))
        torch.testing.assert_close(cfg_eps(model, xt, t, c, 1.0), eps_c, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cfg_eps(model, xt, t, c, 0.0), eps_u, atol=1e-5, rtol=1e-5)
        w = torch.tensor([0.0, 1.0, 5.0])   # one γ per sample
        expected = eps_u + w.reshape(-1, 1, 1, 1) * (eps_c - eps_u)
        torch.testing.assert_close(cfg_eps(model, xt, t, c, w), expected, atol=1e-5, rtol=1e-5)


def test_cfg_sampler_is_reproducible_and_restores_train_mode():
    model = ConditionalDenoisingUNet(hidden=8).train()
    s, x_T, c = ddpm_schedule(5), torch.randn(2, 1, 28, 28), F.one_hot(torch.tensor([0, 1]), 10)
    a = ddpm_cfg_sample(model, x_T, c, 3.0, s, generator=torch.Generator().manual_seed(0))
    b = ddpm_cfg_sample(model, x_T, c, 3.0, s, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert model.training


def test_ddim_timesteps_run_from_T_down_to_1():
    assert ddim_timesteps(300, 300) == list(range(300, 0, -1))
    ts = ddim_timesteps(300, 50)
    assert ts[0] == 300 and ts[-1] == 1 and len(ts) == 50 and all(a > b for a, b in zip(ts, ts[1:]))


def test_ddim_eta_0_is_deterministic_given_x_T():
    model = ConditionalDenoisingUNet(hidden=8)
    s, x_T, c = ddpm_schedule(20), torch.randn(2, 1, 28, 28), F.one_hot(torch.tensor([2, 5]), 10)
    a = ddim_sample(model, x_T, s, steps=5, c=c, w=5.0, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(model, x_T, s, steps=5, c=c, w=5.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_ddim_eta_1_all_steps_is_the_ancestral_step_with_posterior_variance():
    beta = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 300)]).double()
    s = Schedule(beta, 1 - beta, torch.cumprod(1 - beta, 0))
    xt, eps, z = torch.randn(3, 1, 4, 4).double(), torch.randn(3, 1, 4, 4).double(), torch.randn(3, 1, 4, 4).double()
    for t in (2, 50, 299):
        ancestral = posterior_mean(xt, t, eps, s) + ddpm_sigma(s, t, "posterior") * z
        torch.testing.assert_close(ddim_step(xt, t, t - 1, eps, s, eta=1.0, z=z), ancestral)


def test_ddim_reaches_the_target_of_a_perfect_denoiser_in_few_steps():
    s = ddpm_schedule(300)
    target = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x0 = ddim_sample(PointMassDenoiser(target, s), torch.randn(8, 1, 4, 4), s, steps=10)
    torch.testing.assert_close(x0, target.expand_as(x0), atol=1e-3, rtol=0)


def test_samplers_driven_by_the_exact_eps_draw_the_data_distribution():
    # a spread of data, not a point: both samplers must keep its variance, and DDIM in 50 of 300 steps
    # (a sampler that shrank or inflated it, e.g. by an off-by-one in ᾱ, misses the 3% band)
    torch.manual_seed(0)
    s, sd = ddpm_schedule(300), 0.5
    x_T = torch.randn(20000, 1, 2, 2)   # 80,000 pixels: the std's standard error is 0.25%
    for x0 in (ddpm_sample(GaussianDenoiser(sd, s), x_T, s), ddim_sample(GaussianDenoiser(sd, s), x_T, s, steps=50)):
        assert abs(x0.mean().item()) < 0.01
        assert abs(x0.std().item() / sd - 1) < 0.03, x0.std().item()


def test_cfg_samplers_land_on_the_guided_extrapolation():
    # ε̂ = ε_u + γ(ε_c − ε_u) is the exact ε of the point u + γ(target_y − u), so every guided sampler
    # must end there (Algorithm 4, DDIM with c, and the scripts' generate())
    torch.manual_seed(0)
    s = ddpm_schedule(50)
    targets = torch.linspace(-0.5, 0.5, 10).reshape(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    u = torch.zeros(1, 1, 4, 4)
    model = ConditionalPointMass(targets, u, s)
    y = torch.tensor([0, 3, 9])
    c, x_T = F.one_hot(y, 10), torch.randn(3, 1, 4, 4)
    for w in (1.0, 3.0):
        expected = (u + w * (targets[y] - u)).expand(3, 1, 4, 4)
        for sampler in ("ddpm", "ddim"):
            x0 = generate(model, x_T, s, sampler, steps=10, c=c, w=w)
            torch.testing.assert_close(x0, expected, atol=1e-3, rtol=0)


def test_ddim_eta_1_with_all_steps_is_the_ancestral_sampler():
    # the whole chain, not one step: same x_T, same z stream, σ² = β̃_t
    s = ddpm_schedule(30)
    model, x_T = GaussianDenoiser(0.5, s), torch.randn(64, 1, 4, 4)
    a = ddim_sample(model, x_T, s, steps=30, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddpm_sample(model, x_T, s, sigma="posterior", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)   # float32: the two forms of the step differ by ~3e-4


def test_ddim_jump_is_the_posterior_of_the_skipped_steps():
    # η = 1 over a jump t -> t_prev is q(x_prev | x_t, x̂0) of the DDPM itself, in closed form
    s = ddpm_schedule(300)
    ab = s.alpha_bar.double()
    xt, eps, z = (torch.randn(3, 1, 4, 4, dtype=torch.float64) for _ in range(3))
    for t, t_prev in ((300, 294), (7, 1), (50, 0)):
        a_t, a_p = ab[t], ab[t_prev]
        x0_hat = (xt - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        a_jump = a_t / a_p                                     # ᾱ_t / ᾱ_prev: the skipped steps' α product
        mean = (a_p.sqrt() * (1 - a_jump) * x0_hat + a_jump.sqrt() * (1 - a_p) * xt) / (1 - a_t)
        std = ((1 - a_p) / (1 - a_t) * (1 - a_jump)).sqrt()
        sched64 = Schedule(s.beta.double(), s.alpha.double(), ab)
        torch.testing.assert_close(ddim_step(xt, t, t_prev, eps, sched64, eta=1.0, z=z), mean + std * z)


def test_the_timestep_convention_is_asserted():
    # t = 0 would read alpha_bar[-1] = ᾱ_T through negative indexing: the samplers refuse it instead
    s, xt = ddpm_schedule(10), torch.zeros(2, 1, 4, 4)
    for bad in (0, 11):
        with pytest.raises(AssertionError, match="timesteps run 1..T"):
            posterior_mean(xt, bad, xt, s)
        with pytest.raises(AssertionError, match="timesteps run 1..T"):
            ddpm_sigma(s, bad)
    with pytest.raises(AssertionError, match="t_prev"):
        ddim_step(xt, 5, 5, xt, s)
    assert posterior_mean(xt, 1, xt, s).shape == xt.shape and ddim_step(xt, 5, 0, xt, s).shape == xt.shape


def test_ddim_eta_1_step_with_clipped_x0_is_the_clipped_ancestral_step():
    # with clip_x0, ε̂ must be re-derived from the clamped x̂0 (ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t)); only then is the
    # η = 1, t_prev = t − 1 step still Algorithm 2's clipped posterior mean plus √β̃_t z (the unclipped identity
    # of test_ddim_eta_1_all_steps_is_the_ancestral_step_with_posterior_variance, for any x̂0)
    beta = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, 300)]).double()
    s = Schedule(beta, 1 - beta, torch.cumprod(1 - beta, 0))
    g = torch.Generator().manual_seed(0)
    xt, eps, z = (torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    xt = 3 * xt                                   # x̂0 far outside [-1, 1]: the clamp acts
    for t in (2, 50, 299):
        ancestral = posterior_mean(xt, t, eps, s, clip_x0=True) + ddpm_sigma(s, t, "posterior") * z
        torch.testing.assert_close(ddim_step(xt, t, t - 1, eps, s, eta=1.0, z=z, clip_x0=True), ancestral)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_generate_passes_clip_x0_to_either_sampler(sampler):
    # the last step returns x̂0 itself (ᾱ_0 = 1): clamped to [-1, 1] with clip_x0, far outside without it
    # (07 samples both ways with x̂0 clamped; a dropped clip_x0 in generate() would leave its images unclamped)
    sched, x_T = ddpm_schedule(10), torch.zeros(4, 1, 4, 4)
    model = PointMassDenoiser(torch.full((1, 1, 4, 4), 3.0), sched)   # the data sits at 3, outside [-1, 1]
    clipped = generate(model, x_T, sched, sampler, steps=5, clip_x0=True, sigma="posterior")
    free = generate(model, x_T, sched, sampler, steps=5)
    assert clipped.abs().max() <= 1.0 + 1e-5 and free.min() > 2.0
