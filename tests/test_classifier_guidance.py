"""Classifier guidance (Handout A 2): s = 0 is the unguided sampler, the mean shift is s·Σ_t·∇log p
against a linear classifier's closed-form gradient, larger s moves towards the target class, the
frozen DDPM stays bit-identical, and 03_classifier_guidance.py --dry-run writes every file."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.guidance import classifier_guided_sample, grad_log_prob
from common.noisy_classifier import NoisyClassifier, noisy_classifier_loss
from common.samplers import ddpm_sample, posterior_mean
from common.schedules import ddpm_schedule, schedule_from_beta
from common.unet import DenoisingUNet

OUTPUTS = ["config.json", "classifier.pt", "losses.csv", "loss_curve.png", "classifier_accuracy_vs_t.png",
           "samples_s0.png", "samples_s1.png", "samples_s5.png", "samples_s10.png", "guidance_sweep.png",
           "accuracy_vs_scale.png", "diversity_vs_scale.png", "samples.npz", "metrics.json", "guidance_table.md"]


class LinearGuide(nn.Module):
    """log p(y | x) = log_softmax(W x + b)[y]: its gradient is W[y] − Σ_k p_k W[k] in closed form."""

    def __init__(self, dim, num_classes=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(num_classes, dim, generator=g))
        self.b = nn.Parameter(torch.randn(num_classes, generator=g))

    def logits(self, x):
        return x.flatten(1) @ self.W.T + self.b                   # (B, K)

    def log_prob(self, xt, t_frac, y):
        return F.log_softmax(self.logits(xt), dim=1).gather(1, y.reshape(-1, 1)).squeeze(1)

    def closed_form_grad(self, x, y):
        p = F.softmax(self.logits(x), dim=1)                       # (B, K)
        return (self.W[y] - p @ self.W).reshape(x.shape)           # W[y] − Σ_k p_k W[k]


class ShrinkDenoiser(nn.Module):
    """A stand-in ε-predictor, ε̂ = 0.5 x_t (any fixed function of x_t will do here)."""

    def forward(self, xt, t_frac):
        return 0.5 * xt


def test_grad_log_prob_refuses_a_guide_in_train_mode():
    guide = LinearGuide(4).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        grad_log_prob(guide, torch.randn(2, 1, 2, 2), torch.full((2,), 0.5), torch.tensor([1, 2]))


class RecordingClassifier(nn.Module):
    """Stands in for p_φ: keeps the x_t and t/T of its last call, and answers logits that depend on x_t."""

    def forward(self, xt, t_frac):
        self.xt, self.t_frac = xt, t_frac
        return xt.flatten(1)[:, :10] * 3.0                          # (B, 10) logits that depend on x_t


def test_noisy_classifier_loss_feeds_x_t_at_t_over_T_and_is_the_cross_entropy():
    # Handout A 2(b): p_φ sees the forward process's x_t and t/T, never x_0 or the raw t
    spy = RecordingClassifier()
    torch.manual_seed(0)
    sched, n = ddpm_schedule(300), 4000
    x0, y = torch.full((n, 1, 4, 4), 0.8), torch.arange(n) % 10
    t = torch.full((n,), 200)
    loss, logits = noisy_classifier_loss(spy, x0, y, sched, t=t)
    torch.testing.assert_close(spy.t_frac, torch.full((n,), 200 / 300))
    ab = float(sched.alpha_bar[200])
    assert abs(spy.xt.mean().item() - ab ** 0.5 * 0.8) < 0.01                 # E[x_t] = √ᾱ_t x_0
    assert abs(spy.xt.var().item() - (1 - ab)) < 0.02                         # Var[x_t] = 1 − ᾱ_t
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    _, _ = noisy_classifier_loss(spy, x0, y, sched)                            # t ~ U{1..T} when not given
    steps = spy.t_frac * 300
    assert torch.allclose(steps, steps.round()) and steps.min() >= 1 and steps.max() <= 300


def test_s_zero_is_bit_identical_to_the_unguided_sampler():
    torch.manual_seed(0)
    sched = ddpm_schedule(6)
    model, guide = DenoisingUNet(hidden=4).eval(), NoisyClassifier(hidden=4).eval()
    x_T, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])
    unguided = ddpm_sample(model, x_T, sched, generator=torch.Generator().manual_seed(1))
    guided = classifier_guided_sample(model, guide, x_T, y, 0.0, sched, generator=torch.Generator().manual_seed(1))
    assert torch.equal(guided, unguided)


def test_grad_log_prob_matches_the_linear_closed_form():
    guide = LinearGuide(16).eval()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 3, 3, 7, 9])
    torch.testing.assert_close(grad_log_prob(guide, x, torch.ones(5), y), guide.closed_form_grad(x, y),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale_by_variance", [True, False])
def test_each_step_shifts_the_mean_by_s_sigma2_grad(scale_by_variance):
    # a hand-written loop of Handout D Algorithm 2 plus the shift, against classifier_guided_sample
    sched = schedule_from_beta(torch.tensor([0.05, 0.2, 0.3]))
    model, guide = ShrinkDenoiser(), LinearGuide(16).eval()
    x_T, y, s = torch.randn(4, 1, 4, 4), torch.tensor([1, 2, 5, 8]), 3.0
    g = torch.Generator().manual_seed(7)
    xt = x_T.clone()
    for t in (3, 2, 1):
        z = torch.randn(xt.shape, generator=g) if t > 1 else torch.zeros_like(xt)
        step = s * sched.beta[t] if scale_by_variance else s      # Σ_t = σ_t² = β_t
        mean = posterior_mean(xt, t, model(xt, None), sched) + step * guide.closed_form_grad(xt, y)
        xt = mean + sched.beta[t].sqrt() * z
    out = classifier_guided_sample(model, guide, x_T, y, s, sched, generator=torch.Generator().manual_seed(7),
                                   scale_by_variance=scale_by_variance)
    torch.testing.assert_close(out, xt, atol=1e-5, rtol=1e-5)


def test_one_step_shift_is_exactly_s_sigma2_grad():
    sched = schedule_from_beta(torch.tensor([0.25]))               # T = 1: one step, z = 0
    model, guide = ShrinkDenoiser(), LinearGuide(16).eval()
    x_T, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    base = classifier_guided_sample(model, guide, x_T, y, 0.0, sched)
    for s in (1.0, 4.0):
        shift = classifier_guided_sample(model, guide, x_T, y, s, sched) - base
        torch.testing.assert_close(shift, s * sched.beta[1] * guide.closed_form_grad(x_T, y), atol=1e-6, rtol=1e-5)


def test_larger_s_moves_samples_towards_the_target_class():
    sched = ddpm_schedule(20, 0.01, 0.2)
    model, guide = ShrinkDenoiser(), LinearGuide(16, seed=3).eval()
    x_T, y = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.full((64,), 6)
    p_target = []
    for s in (0.0, 1.0, 5.0, 20.0):
        x0 = classifier_guided_sample(model, guide, x_T, y, s, sched, generator=torch.Generator().manual_seed(1))
        p_target.append(guide.log_prob(x0, None, y).exp().mean().item())
    assert all(a < b for a, b in zip(p_target, p_target[1:])), p_target
    assert p_target[-1] > 0.9


def test_frozen_unet_is_bit_identical_after_guided_sampling(script, tmp_path):
    cg = script("03_classifier_guidance.py")
    unet = DenoisingUNet(hidden=4)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": unet.state_dict(), "args": {"hidden": 4, "T": 5, "beta_1": 1e-3, "beta_T": 0.1},
                "epoch": 1}, path)
    frozen, sched, info = cg.load_frozen_unet(path, torch.device("cpu"))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    before = cg.state_hash(frozen)
    guide = NoisyClassifier(hidden=4).eval()
    classifier_guided_sample(frozen, guide, torch.randn(4, 1, 28, 28), torch.arange(4), 10.0, sched)
    assert cg.state_hash(frozen) == before
    saved = torch.load(path)["model"]
    assert all(torch.equal(saved[k], v) for k, v in frozen.state_dict().items())


def test_bad_inputs_are_one_line_errors(script, tmp_path):
    cg = script("03_classifier_guidance.py")
    args = cg.parse_args(["--unet-checkpoint", str(tmp_path / "checkpoint.pt"), "--train-unet"])
    args.train_unet = False
    with pytest.raises(SystemExit, match="no DDPM checkpoint .* --train-unet"):   # how to train one there
        cg.train_unet_if_missing(args, tmp_path / "checkpoint.pt")
    torch.save({"model": {}, "args": {"hidden": 4}}, tmp_path / "foreign.pt")
    with pytest.raises(SystemExit, match="not a checkpoint of 01_ddpm_mnist.py"):
        cg.main(["--unet-checkpoint", str(tmp_path / "foreign.pt"), "--out-dir", str(tmp_path)])
    for bad in (["--scales", "-1"], ["--per-class", "1"], ["--scales", "1", "1"], ["--digits", "10"],
                ["--cfg-samples", str(tmp_path / "missing.npz")], ["--unet-checkpoint", str(tmp_path / "missing.pt")]):
        with pytest.raises(SystemExit) as e:
            cg.parse_args(bad)
        assert e.value.code == 2


def _write_cfg_samples(path):
    """Stands in for 02_cfg_mnist.py's samples.npz: 2 values of γ, 3 samples of each digit."""
    images = np.random.default_rng(0).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    np.savez(path, images=images, labels=np.tile(np.repeat(np.arange(10), 3), 2), guidance=np.repeat([0.0, 5.0], 30))


def test_dry_run_writes_every_file(script, tmp_path, capsys):
    _write_cfg_samples(tmp_path / "cfg.npz")
    metrics = script("03_classifier_guidance.py").main(["--dry-run", "--out-dir", str(tmp_path),
                                                         "--cfg-samples", str(tmp_path / "cfg.npz")])
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "01_dry_run" / "checkpoint.pt").is_file()   # 01's --dry-run made the frozen model
    data = np.load(tmp_path / "samples.npz")
    assert data["images"].dtype == np.uint8 and data["images"].shape == (4 * 10 * 3, 28, 28)
    assert sorted(set(data["scale"].tolist())) == [0, 1, 5, 10]
    assert set(data["labels"].tolist()) == set(range(10))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["frozen_unet"]["bit_identical"] and not saved["frozen_unet"]["requires_grad"]
    assert [r["s"] for r in saved["per_scale"]] == [0, 1, 5, 10]
    for r in saved["per_scale"]:
        assert 0 <= r["judge_accuracy"] <= 1 and r["fd_judge_per_digit_mean"] >= 0
        assert r["diversity_per_digit_mean"] > 0 and len(r["fd_judge_per_digit"]) == 10
    table = (tmp_path / "guidance_table.md").read_text()
    assert table.count("\n| ") >= 4 + 2 and "Classifier-free guidance" in table
    assert [r["w"] for r in saved["cfg_comparison"]["per_guidance"]] == [0, 5]
    assert metrics["classifier"]["reused"] is False
    # a re-run reuses classifier.pt instead of training p_φ again
    cg = script("03_classifier_guidance.py")
    args = cg.parse_args(["--dry-run", "--out-dir", str(tmp_path)])
    args.T, args.beta_1, args.beta_T = (saved["unet"][k] for k in ("T", "beta_1", "beta_T"))
    x, y = cg.load_data(args, torch.device("cpu"))
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T)
    assert cg.get_classifier(args, x, y, sched, tmp_path, torch.device("cpu"))[1]["reused"] is True
    # ... and every s of the sweep from sweep_parts/, the same samples as before
    assert sorted(p.name for p in (tmp_path / "sweep_parts").iterdir()) == [f"s_{s}.pt" for s in (0, 1, 10, 5)]
    images, _ = data["images"], capsys.readouterr()
    again = script("03_classifier_guidance.py").main(["--dry-run", "--out-dir", str(tmp_path)])
    assert capsys.readouterr().out.count("reusing " + str(tmp_path / "sweep_parts")) == 4
    assert np.array_equal(np.load(tmp_path / "samples.npz")["images"], images)
    assert [r["judge_accuracy"] for r in again["per_scale"]] == [r["judge_accuracy"] for r in saved["per_scale"]]
    assert all(r["sampling_reused"] for r in again["per_scale"])
    assert not any(r["sampling_reused"] for r in saved["per_scale"])
    assert (tmp_path / "guidance_table.md").read_text().count("(reused)") == 4
