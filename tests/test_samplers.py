"""Samplers: Algorithm 2's step against the DDPM paper's ε-form and in double precision, z = 0 on the last
step, convergence to a known target (a point, and a Gaussian spread), classifier-free guidance's limits and
its extrapolation, and DDIM against the ancestral sampler and the closed-form posterior."""
import argparse
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import samplers
from common.samplers import (cfg_eps, ddim_sample, ddim_timesteps, ddpm_cfg_sample, ddpm_sample, posterior_mean,
                             step_sigma)
from common.schedules import ddpm_schedule
from common.unets import ConditionalDenoisingUNet
from conftest import ConditionalPointMass, PointMassDenoiser


class GaussianDenoiser(nn.Module):
    """The exact ε-predictor when every pixel of x_0 is drawn from N(0, sd²):
    E[ε | x_t] = √(1 − ᾱ_t)·x_t / (ᾱ_t·sd² + 1 − ᾱ_t). A sampler driven by it must draw N(0, sd²) again."""

    def __init__(self, sd, sched):
        super().__init__()
        self.sd, self.sched = sd, sched

    def forward(self, xt, t_frac, *cond):
        t = (t_frac * self.sched.T).round().long()
        ab = self.sched.alpha_bar[t].float().reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * xt / (ab * self.sd ** 2 + 1 - ab)


def test_posterior_mean_equals_the_eps_form():
    # Ho et al. (2020) Eq. 11: μ = (x_t − β_t/√(1 − ᾱ_t) ε) / √α_t, algebraically equal to line 11
    s = ddpm_schedule(300)
    xt, eps = torch.randn(4, 1, 5, 5).double(), torch.randn(4, 1, 5, 5).double()
    for t in (1, 2, 77, 300):
        expected = (xt - s.beta[t] / (1 - s.alpha_bar[t]).sqrt() * eps) / s.alpha[t].sqrt()
        torch.testing.assert_close(posterior_mean(xt, eps, t, s), expected, atol=1e-10, rtol=1e-10)


def test_at_t_1_the_posterior_mean_is_x0_hat_exactly():
    # ᾱ_0 = 1: line 11's coefficient of x̂_0 is √1·β_1/(1 − ᾱ_1) = 1 and that of x_t is 0. In float32
    # 1 − ᾱ_1 loses digits (0.99983 instead of 1); the samplers form it in double precision
    s = ddpm_schedule(300)
    xt = torch.randn(2, 1, 4, 4)
    x0_hat = torch.randn(2, 1, 4, 4)
    eps = (xt - math.sqrt(s.alpha_bar[1].item()) * x0_hat) / math.sqrt(1 - s.alpha_bar[1].item())
    beta_1, _, ab_1, ab_0 = s.at(1)
    assert abs(math.sqrt(ab_0) * beta_1 / (1 - ab_1) - 1) < 1e-6
    torch.testing.assert_close(posterior_mean(xt, eps, 1, s), x0_hat, atol=1e-5, rtol=0)


def test_last_step_adds_no_noise():
    s = ddpm_schedule(1)   # a single step: t = 1, where Algorithm 2 sets z = 0
    model, x_T = PointMassDenoiser(torch.tensor(0.3), s), torch.randn(3, 1, 4, 4)
    a = ddpm_sample(model, x_T, s, generator=torch.Generator().manual_seed(1))
    b = ddpm_sample(model, x_T, s, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.full_like(a, 0.3), atol=1e-5, rtol=0)


def test_sampler_reaches_the_target_of_a_perfect_denoiser():
    torch.manual_seed(0)
    s = ddpm_schedule(50)
    target = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x0 = ddpm_sample(PointMassDenoiser(target, s), torch.randn(8, 1, 4, 4), s)
    torch.testing.assert_close(x0, target.expand_as(x0), atol=1e-3, rtol=0)


def test_sigma_choices():
    s = ddpm_schedule(10)
    assert step_sigma(s, 5) == pytest.approx(s.beta[5].sqrt().item(), rel=1e-12)
    post = (1 - s.alpha_bar[4]) / (1 - s.alpha_bar[5]) * s.beta[5]
    assert step_sigma(s, 5, "posterior") == pytest.approx(post.sqrt().item(), rel=1e-12)
    assert step_sigma(s, 1, "posterior") == 0   # β̃_1 = 0: nothing to add at the last step


def test_the_timestep_convention_is_asserted():
    # t = 0 would read alpha_bar[-1] = ᾱ_T through negative indexing: the schedule refuses it instead
    s, xt = ddpm_schedule(10), torch.zeros(2, 1, 4, 4)
    for bad in (0, 11):
        with pytest.raises(AssertionError, match="timesteps run 1..T"):
            posterior_mean(xt, xt, bad, s)


def test_cfg_limits_gamma_1_is_conditional_gamma_0_unconditional():
    torch.manual_seed(0)
    model = ConditionalDenoisingUNet(hidden=8).eval()
    xt, t = torch.randn(3, 1, 28, 28), torch.full((3,), 0.5)
    c = F.one_hot(torch.tensor([1, 4, 9]), 10).float()
    with torch.no_grad():
        eps_c, eps_u = model(xt, t, c, torch.ones(3)), model(xt, t, c, torch.zeros(3))
        torch.testing.assert_close(cfg_eps(model, xt, t, c, 1.0), eps_c, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cfg_eps(model, xt, t, c, 0.0), eps_u, atol=1e-5, rtol=1e-5)
        w = torch.tensor([0.0, 1.0, 5.0])   # one γ per sample
        expected = eps_u + w.reshape(-1, 1, 1, 1) * (eps_c - eps_u)
        torch.testing.assert_close(cfg_eps(model, xt, t, c, w), expected, atol=1e-5, rtol=1e-5)


def test_gamma_0_and_1_take_one_pass_of_the_batch_and_equal_the_two_pass_mixture():
    # γ = 0 needs only ε_uncond and γ = 1 only ε_cond: one pass of B samples, not 2B; any other γ takes one
    # batched pass of 2B. Each equals Algorithm 4's mixture of two predictions within float tolerance.
    torch.manual_seed(0)
    model, s = ConditionalDenoisingUNet(hidden=8).eval(), ddpm_schedule(5)
    sizes, forward = [], model.forward
    model.forward = lambda x, *rest: sizes.append(len(x)) or forward(x, *rest)
    x_T, c = torch.randn(3, 1, 28, 28), F.one_hot(torch.tensor([1, 4, 9]), 10).float()
    with torch.no_grad():
        for gamma, per_step in ((0.0, 3), (1.0, 3), (5.0, 6)):
            sizes.clear()
            got = ddpm_cfg_sample(model, x_T, c, gamma, s, torch.Generator().manual_seed(1))
            assert sizes == [per_step] * s.T, gamma
            xt, g = x_T, torch.Generator().manual_seed(1)        # lines 5–15 literally, with the same z's
            for t in range(s.T, 0, -1):
                z = torch.randn(xt.shape, generator=g) if t > 1 else torch.zeros_like(xt)
                t_frac = torch.full((3,), t / s.T)
                eps_c, eps_u = forward(xt, t_frac, c), forward(xt, t_frac, 0 * c)   # lines 11, 12
                xt = posterior_mean(xt, eps_u + gamma * (eps_c - eps_u), t, s) + step_sigma(s, t) * z
            torch.testing.assert_close(got, xt, atol=1e-5, rtol=1e-5)


def test_cfg_samplers_land_on_the_guided_extrapolation():
    # ε̂ = ε_u + γ(ε_c − ε_u) is the exact ε of the point u + γ(target_y − u), so Algorithm 4 and DDIM with c
    # must both end there; the same seed gives the same samples
    s = ddpm_schedule(50)
    targets = torch.linspace(-0.5, 0.5, 10).reshape(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    u = torch.zeros(1, 1, 4, 4)
    model = ConditionalPointMass(targets, u, s)
    y = torch.tensor([0, 3, 9])
    c, x_T = F.one_hot(y, 10).float(), torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for w in (1.0, 3.0):
        expected = (u + w * (targets[y] - u)).expand(3, 1, 4, 4)
        for x0 in (ddpm_cfg_sample(model, x_T, c, w, s), ddim_sample(model, x_T, s, steps=10, c=c, gamma=w)):
            torch.testing.assert_close(x0, expected, atol=1e-3, rtol=0)
    a, b = (ddpm_cfg_sample(model, x_T, c, 3.0, s, torch.Generator().manual_seed(0)) for _ in range(2))
    torch.testing.assert_close(a, b)


def test_ddim_timesteps_run_from_T_down_to_1():
    assert ddim_timesteps(300, 300) == list(range(300, 0, -1))
    ts = ddim_timesteps(300, 50)
    assert ts[0] == 300 and ts[-1] == 1 and len(ts) == 50 and all(a > b for a, b in zip(ts, ts[1:]))


def test_ddim_eta_0_is_deterministic_given_x_T():
    model = ConditionalDenoisingUNet(hidden=8)
    s, x_T, c = ddpm_schedule(20), torch.randn(2, 1, 28, 28), F.one_hot(torch.tensor([2, 5]), 10).float()
    a = ddim_sample(model, x_T, s, steps=5, eta=0.0, c=c, gamma=5.0, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(model, x_T, s, steps=5, eta=0.0, c=c, gamma=5.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    c_ = ddim_sample(model, x_T, s, steps=5, eta=1.0, c=c, gamma=5.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c_)


def test_ddim_eta_1_with_all_steps_is_the_ancestral_sampler_with_posterior_variance():
    # the whole chain: same x_T, same z stream, σ² = β̃_t; with x̂0 clamped too (07 samples both ways)
    s = ddpm_schedule(30)
    model, x_T = GaussianDenoiser(0.5, s), torch.randn(64, 1, 4, 4)
    a = ddim_sample(model, x_T, s, steps=30, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddpm_sample(model, x_T, s, sigma="posterior", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    far = PointMassDenoiser(torch.full((1, 1, 4, 4), 3.0), s)    # x̂0 far outside [-1, 1]: the clamp acts
    a = ddim_sample(far, 3 * x_T, s, steps=30, eta=1.0, clip_x0=True, generator=torch.Generator().manual_seed(3))
    b = ddpm_sample(far, 3 * x_T, s, sigma="posterior", clip_x0=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert a.abs().max() <= 1 + 1e-5


def test_ddim_reaches_the_target_of_a_perfect_denoiser_in_few_steps():
    s = ddpm_schedule(300)
    target = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x0 = ddim_sample(PointMassDenoiser(target, s), torch.randn(8, 1, 4, 4), s, steps=10, eta=0.0)
    torch.testing.assert_close(x0, target.expand_as(x0), atol=1e-3, rtol=0)


def test_samplers_driven_by_the_exact_eps_draw_the_data_distribution():
    # a spread of data, not a point: Algorithm 2 and deterministic DDIM in 50 of 300 steps must keep its
    # variance (a sampler that shrank or inflated it, e.g. by an off-by-one in ᾱ, misses the 3% band)
    torch.manual_seed(0)
    s, sd = ddpm_schedule(300), 0.5
    x_T = torch.randn(20000, 1, 2, 2)   # 80,000 pixels: the std's standard error is 0.25%
    model = GaussianDenoiser(sd, s)
    for x0 in (ddpm_sample(model, x_T, s), ddim_sample(model, x_T, s, steps=50, eta=0.0)):
        assert abs(x0.mean().item()) < 0.01
        assert abs(x0.std().item() / sd - 1) < 0.03, x0.std().item()


def test_merging_and_the_backward_figure_run_part_of_the_chain():
    # t_start < T starts from z_t (Handout C 2); stopping at t_end and going on from there is the whole chain
    s = ddpm_schedule(20)
    model, x = GaussianDenoiser(0.5, s), torch.randn(4, 1, 4, 4)
    whole = ddpm_sample(model, x, s, t_start=12, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    half = ddpm_sample(model, x, s, t_start=12, t_end=6, generator=g)
    torch.testing.assert_close(ddpm_sample(model, half, s, t_start=5, generator=g), whole)


@pytest.mark.parametrize("sampler, c, expected", [("ddpm", None, ("ddpm", "posterior", True)),
                                                  ("ddpm", "one-hot", ("cfg", 5.0)),
                                                  ("ddim", None, ("ddim", 4, 0.5, None, 5.0, True)),
                                                  ("ddim", "one-hot", ("ddim", 4, 0.5, 3, 5.0, True))])
def test_draw_samples_splits_x_T_into_sample_batches_for_the_chosen_sampler(monkeypatch, sampler, c, expected):
    calls = []
    monkeypatch.setattr(samplers, "ddpm_sample", lambda model, x, sched, sigma, clip_x0, generator: calls.append(
        ("ddpm", sigma, clip_x0, len(x))) or x)
    monkeypatch.setattr(samplers, "ddpm_cfg_sample", lambda model, x, c, gamma, sched, generator: calls.append(
        ("cfg", gamma, len(x))) or x + c[:, :1, None, None])
    monkeypatch.setattr(samplers, "ddim_sample", lambda model, x, sched, steps, eta, c, gamma, clip_x0, generator:
                        calls.append(("ddim", steps, eta, None if c is None else c.shape[1], gamma, clip_x0, len(x)))
                        or x)
    args = argparse.Namespace(sampler=sampler, sample_steps=4, eta=0.5, sample_batch=3)
    x_T = torch.randn(7, 1, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1])
    c = F.one_hot(y, 3).float() if c else None
    x = samplers.draw_samples(None, None, x_T, 0, args, c, gamma=5.0, sigma="posterior", clip_x0=True)
    assert calls == [expected + (3,), expected + (3,), expected + (1,)]
    # each batch keeps its own labels: sample i of the cfg stand-in is x_T[i] + (y_i == 0)
    torch.testing.assert_close(x, x_T + (y == 0).float()[:, None, None, None] if sampler == "ddpm" and c is not None
                               else x_T)
