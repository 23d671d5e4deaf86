"""Schedules against Handout D §2.2's formulas, and the forward process's moments."""
import torch

from common.schedules import ddpm_forward, ddpm_schedule, sample_timesteps


def test_linear_schedule_matches_handout_d():
    s = ddpm_schedule(300)
    assert s.T == 300 and len(s.beta) == 301
    # the convention: index 0 is the clean image
    assert s.beta[0] == 0 and s.alpha_bar[0] == 1
    torch.testing.assert_close(s.beta[1], torch.tensor(1e-4))
    torch.testing.assert_close(s.beta[300], torch.tensor(0.02))
    steps = s.beta[2:] - s.beta[1:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / 299))
    torch.testing.assert_close(s.alpha, 1 - s.beta)
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(1 - s.beta, 0))
    # ᾱ_t = ∏_{s ≤ t} α_s, by a plain Python loop
    prod = 1.0
    for t in (1, 2, 150, 300):
        prod = float(torch.prod(1 - torch.linspace(1e-4, 0.02, 300, dtype=torch.float64)[:t]))
        assert abs(float(s.alpha_bar[t]) - prod) < 1e-6


def test_forward_process_mean_and_variance():
    torch.manual_seed(0)
    s = ddpm_schedule(300)
    n, t = 200_000, 120
    x0 = torch.full((n, 1, 1, 1), 0.5)
    xt = ddpm_forward(x0, torch.full((n,), t), s.alpha_bar, torch.randn_like(x0))
    ab = float(s.alpha_bar[t])
    assert abs(xt.mean().item() - ab ** 0.5 * 0.5) < 0.01
    assert abs(xt.var().item() - (1 - ab)) < 0.01


def test_sampled_timesteps_cover_1_to_T():
    t = sample_timesteps(20_000, 5, "cpu")
    assert t.min() == 1 and t.max() == 5 and len(t.unique()) == 5


def test_forward_process_is_exact_per_sample():
    # Handout D Algorithm 1 line 6 with a different t in every row: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε
    s = ddpm_schedule(300)
    x0, eps = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    t = torch.tensor([1, 2, 150, 300])
    xt = ddpm_forward(x0, t, s.alpha_bar, eps)
    for i, ti in enumerate(t.tolist()):
        ab = s.alpha_bar[ti]
        torch.testing.assert_close(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i])
    torch.testing.assert_close(ddpm_forward(x0, torch.zeros(4, dtype=torch.long), s.alpha_bar, eps), x0)
