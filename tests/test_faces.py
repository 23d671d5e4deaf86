"""06_faces.py (Handout C); its data, the faces loader and tools/utkface.py, are tested in test_data.py.

The merging and guidance tests use a denoiser and an age guide that are exact in closed form (Gaussian data), so
they check the mechanism itself, not how well a network happened to train. No face data is available offline:
everything else runs on synthetic faces, whose "age" is 100 × their mean brightness.
"""
import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.cli import as_flags
from common.data import brightness_age, from_uint8, synthetic_faces
from common.samplers import grad_log_prob
from common.schedules import ddpm_schedule
from conftest import load_script

M = load_script("06_faces.py")
TARGETS = [18.0, 40.0, 60.0, 80.0]


class GaussianData:
    """x0 = m·1 + τ·ξ with m ~ N(0, s_m²), ξ ~ N(0, I): E[x0 | x_t] is exact and linear. For the pixel mean and for
    the residual, E[signal | x_t] is the scalar Wiener filter √ᾱ v / (ᾱ v + n) of that part of x_t."""

    def __init__(self, sched, s_m=0.3, tau=0.3):
        self.sched, self.s_m, self.tau = sched, s_m, tau

    def shrink(self, t, d):
        """(mean factor, residual factor), each (B, 1, 1, 1), for timesteps t (B,) and d pixels."""
        ab = self.sched.alpha_bar[t].float().reshape(-1, 1, 1, 1)
        v_mean = self.s_m ** 2 + self.tau ** 2 / d                          # Var(mean of x0)
        return (ab.sqrt() * v_mean / (ab * v_mean + (1 - ab) / d),
                ab.sqrt() * self.tau ** 2 / (ab * self.tau ** 2 + 1 - ab))


class ExactDenoiser(nn.Module):
    """ε_θ(x_t, t) = (x_t − √ᾱ_t E[x0 | x_t]) / √(1 − ᾱ_t), exact for GaussianData."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, xt, t_frac):
        t = (t_frac * self.data.sched.T).round().long()
        ab = self.data.sched.alpha_bar[t].float().reshape(-1, 1, 1, 1)
        mean = xt.mean(dim=(1, 2, 3), keepdim=True)
        k_mean, k_resid = self.data.shrink(t, xt[0].numel())
        return (xt - ab.sqrt() * (k_mean * mean + k_resid * (xt - mean))) / (1 - ab).sqrt()


class ExactAgeGuide(nn.Module):
    """f(z_t, t) = E[brightness age of x0 | z_t] = 50 + 50 · E[mean of x0 | z_t]; log N(y; f, 1) up to a constant."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def log_prob(self, xt, t_frac, y):
        t = (t_frac * self.data.sched.T).round().long()
        f = 50 + 50 * self.data.shrink(t, xt[0].numel())[0].flatten() * xt.mean(dim=(1, 2, 3))
        return -0.5 * (f - y) ** 2


class InflatingDenoiser(nn.Module):
    """Stands in for a weak DDPM whose own samples leave [-1, 1] far behind: ε̂ = −x_t pushes each mean outwards."""

    def forward(self, xt, t_frac):
        return -xt


class Recorder:
    """Stands in for classifier_guided_sample: records its step scale and options, returns x_T unchanged."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, guide, x_T, y, s, sched, **options):
        self.calls.append((s, options["variance_scaled"], options["sigma"]))
        return x_T


def guidance_args(scale, per_age=6):
    return argparse.Namespace(target_ages=TARGETS, per_age=per_age, seed=0, guidance_scale=scale, sigma="beta",
                              guidance_step="gradient")


# --- Problem 3's faces ---

def test_regressor_split_keeps_exactly_the_ages_from_0_to_100():
    ages = torch.tensor([-1, 0, 5, 100, 100.5, 30, 250, 42, 18, 60, 61, 62, 63, 64, -3, 99.9])
    train, val = M.split_for_regressor(argparse.Namespace(seed=0, n_val=100), ages)
    valid = {i for i, a in enumerate(ages.tolist()) if 0 <= a <= 100}
    assert set(train.tolist()) | set(val.tolist()) == valid and not set(train.tolist()) & set(val.tolist())
    assert len(val) == len(valid) // 5 == 2                               # at most a fifth is held out
    with pytest.raises(SystemExit, match="^error: only 9 faces have an age in"):
        M.split_for_regressor(argparse.Namespace(seed=0, n_val=1), torch.tensor([-1.0] * 5 + [20.0] * 9))


# --- Problem 1: sampling ---

@pytest.mark.parametrize("sampler, sigma, expected", [("ddpm", "beta", "Algorithm 18.2, σ_t = √β_t"),
                                                      ("ddpm", "posterior", "Algorithm 18.2, σ_t = √β̃_t"),
                                                      ("ddim", "beta", "DDIM, 4 steps, η = 0.5")])
def test_problem_1_names_algorithm_18_2_with_the_chosen_sigma_or_ddim(sampler, sigma, expected):
    args = argparse.Namespace(sampler=sampler, sigma=sigma, sample_steps=4, eta=0.5, sample_batch=3)
    assert M.sampler_name(args) == expected


# --- Problem 2: merging ---

def test_merge_halves_takes_the_left_of_the_first_and_the_right_of_the_second():
    a, b = torch.arange(2 * 4 * 6.0).reshape(2, 1, 4, 6), -torch.arange(2 * 4 * 6.0).reshape(2, 1, 4, 6) - 1
    m = M.merge_halves(a, b)
    assert torch.equal(m[..., :3], a[..., :3]) and torch.equal(m[..., 3:], b[..., 3:])


def test_merging_at_small_t_keeps_each_half_and_at_t_near_T_forgets_them():
    sched = ddpm_schedule(100, 1e-3, 0.2)
    x = from_uint8(synthetic_faces(10, seed=3)[0])
    x1, x2 = x[:5], x[5:]
    args = argparse.Namespace(merge_ts=[2, 99], seed=0, sigma="beta")
    merged = M.merge_pairs(args, ExactDenoiser(GaussianData(sched)), sched, x1, x2)
    assert merged.shape == (2, 5, 1, 48, 48)
    own, swapped = [[(m - M.merge_halves(a, b)).pow(2).mean().sqrt().item() for m in merged]
                    for a, b in ((x1, x2), (x2, x1))]
    assert own[0] < 0.3 * swapped[0]       # t = 2: the left half is face 1's, the right half face 2's
    assert own[1] > 3 * own[0]             # t = 99: the reverse process has redrawn (nearly) everything


# --- Problem 3: the age regressor and guidance ---

def test_age_log_prob_is_the_unit_gaussian_and_its_gradient_is_y_minus_f_times_grad_f():
    torch.manual_seed(0)
    f = M.AgeRegressor(hidden=4, image_size=8).eval()
    xt, t_frac, y = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5), torch.tensor([18.0, 40.0, 80.0])
    torch.testing.assert_close(f.log_prob(xt, t_frac, y), torch.distributions.Normal(f(xt, t_frac), 1.0).log_prob(y))
    x = xt.clone().requires_grad_(True)
    (grad_f,) = torch.autograd.grad(f(x, t_frac).sum(), x)
    assert grad_f.abs().sum() > 0
    expected = (y - f(xt, t_frac)).detach().reshape(-1, 1, 1, 1) * grad_f
    torch.testing.assert_close(grad_log_prob(f, xt, t_frac, y), expected)


def test_exact_guide_moves_brightness_age_monotonically_to_the_target():
    # 0.01 on −∂(f − y)²/∂z_t is a step of 0.02 on ∇ log N: the exact guide's ∇f grows like 1/√ᾱ_t, so without a
    # Σ_t factor a larger step overshoots at large t
    data = GaussianData(ddpm_schedule(100, 1e-3, 0.2))
    images, y = M.age_guided(guidance_args(0.01), ExactDenoiser(data), ExactAgeGuide(data), data.sched, (1, 16, 16),
                             torch.device("cpu"))
    assert y.tolist() == [a for a in TARGETS for _ in range(6)]
    ages = brightness_age(images).reshape(4, 6).mean(dim=1)
    assert torch.all(ages[1:] > ages[:-1] + 10), ages
    torch.testing.assert_close(ages, torch.tensor(TARGETS), atol=3.0, rtol=0)
    unguided, _ = M.age_guided(guidance_args(0.0), ExactDenoiser(data), ExactAgeGuide(data), data.sched, (1, 16, 16),
                               torch.device("cpu"))
    rows = brightness_age(unguided).reshape(4, 6).mean(dim=1)            # scale 0: the prior, 50 ± 15 per face
    assert torch.all((rows - 50).abs() < 15), rows
    for scale in (0.07, 0.2):      # too large: the faces become finite but far beyond ±10 (0.07), or nan (0.2)
        with pytest.raises(SystemExit, match=rf"^error: age guidance diverged at --guidance-scale {scale:g} .*"
                                             rf"--guidance-scale {scale / 10:g}$"):
            M.age_guided(guidance_args(scale), ExactDenoiser(data), ExactAgeGuide(data), data.sched, (1, 16, 16),
                         torch.device("cpu"))


@pytest.mark.parametrize("step, variance_scaled", [("gradient", False), ("variance-scaled", True)])
def test_the_guidance_step_is_twice_the_scale_on_grad_log_n_times_sigma2_if_asked(monkeypatch, step,
                                                                                   variance_scaled):
    recorder = Recorder()
    monkeypatch.setattr(M, "classifier_guided_sample", recorder)
    guide = ExactAgeGuide(GaussianData(ddpm_schedule(10)))
    args = guidance_args(0.2, per_age=2)
    args.guidance_step = step
    images, _ = M.age_guided(args, None, guide, None, (1, 8, 8), torch.device("cpu"))
    assert recorder.calls == [(0.4, variance_scaled, "beta")] and images.shape == (8, 1, 8, 8)
    assert M.parse_args(["--guidance-step", step]).guidance_step == step


def test_pixels_the_unguided_ddpm_pushes_beyond_10_are_a_note_not_an_error(capsys):
    data = GaussianData(ddpm_schedule(100, 1e-3, 0.2))
    for scale in (0.0, 0.01):
        images, _ = M.age_guided(guidance_args(scale, per_age=2), InflatingDenoiser(), ExactAgeGuide(data),
                                 data.sched, (1, 16, 16), torch.device("cpu"))
        assert torch.isfinite(images).all() and images.abs().max() > 10
        assert "note: some age-guided faces have pixels beyond ±10" in capsys.readouterr().out


# --- the script ---

def test_dry_run_writes_every_promised_file(tmp_path, capsys):
    metrics = M.main(["--dry-run", "--out-dir", str(tmp_path)])
    for name in ["config.json", "losses.csv", "loss_curve.png", "samples_epoch_001.png", "checkpoint.pt",
                 "regressor_losses.csv", "regressor_loss_curve.png", "checkpoint_regressor.pt", "samples.npz",
                 "samples_final.png", "merged.npz", "merged.png", "age_guided.npz", "age_guided.png", "metrics.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, png
    samples = np.load(tmp_path / "samples.npz")["images"]
    assert samples.shape == (10, 48, 48) and samples.dtype == np.uint8 and len(np.unique(samples, axis=0)) == 10
    merged = np.load(tmp_path / "merged.npz")
    assert merged["merged"].shape == (4, 5, 48, 48)
    assert merged["faces_1"].shape == merged["faces_2"].shape == (5, 48, 48)
    assert merged["t"].tolist() == [1, 3, 4, 5]
    guided = np.load(tmp_path / "age_guided.npz")
    assert guided["images"].shape == (8, 48, 48) and guided["predicted_ages"].shape == (8,)
    assert guided["target_ages"].tolist() == [18, 18, 40, 40, 60, 60, 80, 80]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["n_age_excluded"] == 2 and metrics["n_regressor_val"] == 6     # ages 0 and 25 of 32 are −1
    assert metrics["sampler"] == "Algorithm 18.2, σ_t = √β_t" and np.isfinite(metrics["regressor_val_rmse_t1_years"])
    assert set(metrics["guided_mean_predicted_age_t1"]) == {"18", "40", "60", "80"}
    assert metrics["merge_rmse"]["1"]["to_own_halves"] < metrics["merge_rmse"]["1"]["to_swapped_halves"]
    assert len((tmp_path / "losses.csv").read_text().splitlines()) == 1 + 2              # 32 faces, batches of 16
    assert len((tmp_path / "regressor_losses.csv").read_text().splitlines()) == 1 + 2       # 24 faces aged 0–100
    ddpm, regressor = (torch.load(tmp_path / name, weights_only=True)
                       for name in ("checkpoint.pt", "checkpoint_regressor.pt"))
    assert ddpm["epoch"] == regressor["epoch"] == 1 and regressor["bound"] == "regressor_epochs"
    assert set(regressor["model"]) == set(M.AgeRegressor(1, 4).state_dict())
    # --resume checks the checkpoints before anything is built or trained
    capsys.readouterr()
    with pytest.raises(SystemExit, match="checkpoint.pt was trained with --hidden 4, not 8"):
        M.main(["--dry-run", "--out-dir", str(tmp_path), "--resume", "--hidden", "8"])
    assert "DenoisingUNet" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--T", "100", "--merge-ts", "50", "100"], "--merge-ts must lie in 1..T − 1 (here T = 100), got 50 100"),
    (["--T", "1"], "--T must be at least 2: Problem 2 merges at some t < T, got 1"),
    (["--target-ages", "18", "120"], "argument --target-ages: invalid age in 0..100 value: '120'"),
    (["--guidance-scale", "-1"], "argument --guidance-scale: invalid guidance scale"),
    (["--sigma", "sqrt"], "argument --sigma: invalid choice: 'sqrt'"),
])
def test_bad_flags_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit):
        M.parse_args(argv)
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_missing_course_files_stop_before_anything_is_written(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: faces file .*faces23k_48x48.npy.gz not found"):
        M.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_resume_continues_both_models_exactly(script, tmp_path):
    # the DDPM after 2 epochs and the regressor after 2, straight or in two runs, are the same weights
    main = script("06_faces.py").main
    flags = ["--dry-run", "--sample-epochs", "1"]
    main(flags + ["--out-dir", str(tmp_path / "straight"), "--epochs", "2", "--regressor-epochs", "2"])
    main(flags + ["--out-dir", str(tmp_path / "split"), "--epochs", "1", "--regressor-epochs", "1"])
    main(flags + ["--out-dir", str(tmp_path / "split"), "--epochs", "2", "--regressor-epochs", "2", "--resume"])
    for name in ("checkpoint.pt", "checkpoint_regressor.pt"):
        a, b = (torch.load(tmp_path / run / name, weights_only=True) for run in ("straight", "split"))
        assert a["epoch"] == b["epoch"] == 2, name
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)


def test_resume_with_faces_of_another_channel_count_says_so_and_writes_nothing(tmp_path):
    faces, ages = synthetic_faces(32)
    np.save(tmp_path / "grey.npy", faces)
    np.save(tmp_path / "rgb.npy", np.repeat(faces[..., None], 3, axis=3))
    np.save(tmp_path / "ages.npy", ages)
    argv = as_flags(M.DRY_RUN).split() + ["--ages", str(tmp_path / "ages.npy"), "--out-dir", str(tmp_path / "run")]
    M.main(argv + ["--faces", str(tmp_path / "grey.npy")])      # a real run (the dry run's sizes) on greyscale faces
    config = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(SystemExit, match=r"checkpoint.pt was trained on faces with 1 channel\(s\), and \S+rgb.npy "
                                         r"has 3: pass the faces file it was trained on to continue it"):
        M.main(argv + ["--faces", str(tmp_path / "rgb.npy"), "--epochs", "2", "--resume"])
    assert (tmp_path / "run" / "config.json").read_bytes() == config


def test_the_default_merge_times_are_the_t_whose_alpha_bar_is_nearest_each_target():
    # Handout C 2: four t that mix the two faces differently, from a faint noising (ᾱ_t ≈ 0.9) to a heavy one
    for argv, sched in (([], ddpm_schedule(1000)), (["--quick"], ddpm_schedule(100, 1e-3, 0.2))):
        ts = M.parse_args(argv).merge_ts
        assert len(ts) == len(M.MERGE_ALPHA_BARS) and ts == sorted(ts) and ts[-1] < sched.T
        for t, a in zip(ts, M.MERGE_ALPHA_BARS):
            assert all(abs(sched.alpha_bar[t] - a) <= abs(sched.alpha_bar[u] - a) for u in range(1, sched.T))
