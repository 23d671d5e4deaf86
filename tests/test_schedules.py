"""Schedules against Handout D §2.2's formulas, and the forward process's moments (the cosine schedule of
Handout E: tests/test_afhq_cosine.py)."""
import torch

from common.schedules import ddpm_schedule, q_sample


def test_linear_schedule_matches_handout_d():
    s = ddpm_schedule(300)
    assert s.T == 300 and len(s.beta) == 301 and s.beta.dtype == torch.float64
    assert s.beta[0] == 0 and s.alpha_bar[0] == 1                 # the convention: index 0 is the clean image
    assert s.beta[1].item() == 1e-4 and abs(s.beta[300].item() - 0.02) < 1e-15
    steps = s.beta[2:] - s.beta[1:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / 299))
    torch.testing.assert_close(s.alpha, 1 - s.beta)
    prod = 1.0
    for t in range(1, 301):                                       # ᾱ_t = ∏_{s ≤ t} α_s, by a plain loop
        prod *= 1 - s.beta[t].item()
        assert abs(s.alpha_bar[t].item() - prod) < 1e-12


def test_at_reads_one_step_and_refuses_t_outside_1_to_T():
    s = ddpm_schedule(10)
    assert s.at(1) == (s.beta[1].item(), s.alpha[1].item(), s.alpha_bar[1].item(), 1.0)
    for bad in (0, 11):
        try:
            s.at(bad)
        except AssertionError as e:
            assert "timesteps run 1..T" in str(e)
        else:
            raise AssertionError(f"t = {bad} was accepted")


def test_forward_process_is_exact_per_sample_and_has_the_right_moments():
    # Handout D Algorithm 1 line 6 with a different t in every row: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε
    s = ddpm_schedule(300)
    alpha_bar = s.alpha_bar.float()
    x0, eps = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    t = torch.tensor([1, 2, 150, 300])
    xt = q_sample(x0, t, alpha_bar, eps)
    for i, ti in enumerate(t.tolist()):
        ab = alpha_bar[ti]
        torch.testing.assert_close(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i])
    torch.manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 0.5)
    xt = q_sample(x0, torch.full((200_000,), 120), alpha_bar, torch.randn_like(x0))
    ab = s.alpha_bar[120].item()
    assert abs(xt.mean().item() - ab ** 0.5 * 0.5) < 0.01 and abs(xt.var().item() - (1 - ab)) < 0.01
