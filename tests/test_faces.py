"""06_faces.py, common/faces.py and common/faces_data.py: data validation, UTKFace conversion, merging,
age guidance, dry run.

No face data is available offline, so every test runs on synthetic images. The guidance and
merging tests use a denoiser that is exact in closed form (Gaussian data), so they check the
mechanism itself, not how well a network happened to train.
"""
import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.faces import AgeRegressor, merge_halves, predict_age
from common.faces_data import brightness_age, load_faces, save_array, synthetic_faces
from common.guidance import classifier_guided_sample, grad_log_prob
from common.samplers import ddpm_sample, ddpm_sample_from
from common.schedules import ddpm_schedule
from common.train import fit_epoch
from common.train_state import make_optimizer
from conftest import load_script

TARGETS = [18.0, 40.0, 60.0, 80.0]


class GaussianData:
    """x0 = m·1 + τ·ξ with m ~ N(0, s_m²), ξ ~ N(0, I): the posterior E[x0 | x_t] is exact and linear.

    Split x into its pixel mean and the residual: for each, E[signal | x_t] is the scalar Wiener
    filter √ᾱ v / (ᾱ v + n) · (that part of x_t), with v its signal and n its noise variance.
    """

    def __init__(self, sched, s_m=0.3, tau=0.3):
        self.sched, self.s_m, self.tau = sched, s_m, tau

    def sample(self, n, size, generator):
        m = self.s_m * torch.randn(n, 1, 1, 1, generator=generator)
        return m + self.tau * torch.randn(n, 1, size, size, generator=generator)

    def shrink(self, t, d):
        """(mean factor, residual factor), each (B, 1, 1, 1), for timesteps t (B,) and d pixels."""
        ab = self.sched.alpha_bar[t].reshape(-1, 1, 1, 1)
        v_mean = self.s_m ** 2 + self.tau ** 2 / d                            # Var(mean of x0)
        return (ab.sqrt() * v_mean / (ab * v_mean + (1 - ab) / d),
                ab.sqrt() * self.tau ** 2 / (ab * self.tau ** 2 + 1 - ab))

    def x0_hat(self, xt, t):
        mean = xt.mean(dim=(1, 2, 3), keepdim=True)
        k_mean, k_resid = self.shrink(t, xt[0].numel())
        return k_mean * mean + k_resid * (xt - mean)


class ExactDenoiser(nn.Module):
    """ε_θ(x_t, t) = (x_t − √ᾱ_t E[x0 | x_t]) / √(1 − ᾱ_t), exact for GaussianData."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, xt, t_frac):
        t = (t_frac * self.data.sched.T).round().long()
        ab = self.data.sched.alpha_bar[t].reshape(-1, 1, 1, 1)
        return (xt - ab.sqrt() * self.data.x0_hat(xt, t)) / (1 - ab).sqrt()


class ExactAgeGuide(nn.Module):
    """f(z_t, t) = E[brightness age of x0 | z_t] = 50 + 50 · E[mean of x0 | z_t]; log N(y; f, 1)."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def log_prob(self, xt, t_frac, y):
        t = (t_frac * self.data.sched.T).round().long()
        k_mean = self.data.shrink(t, xt[0].numel())[0].flatten()
        f = 50 + 50 * k_mean * xt.mean(dim=(1, 2, 3))
        return -0.5 * (f - y) ** 2


def guided_ages(guide, data, size, s, n_per=6, seed=0):
    """Guided samples for each target in TARGETS; returns their true (brightness) ages, (4, n_per)."""
    y = torch.tensor(TARGETS).repeat_interleave(n_per)
    x_T = torch.randn(n_per, 1, size, size, generator=torch.Generator().manual_seed(seed)).repeat(4, 1, 1, 1)
    x0 = classifier_guided_sample(ExactDenoiser(data), guide, x_T, y, s, data.sched,
                                  generator=torch.Generator().manual_seed(seed + 1), scale_by_variance=False)
    return brightness_age(x0).reshape(4, n_per)


# --- data ---

@pytest.mark.parametrize("dtype, scale", [(np.uint8, 1), (np.float32, 1 / 255), (np.float64, 1.0), (np.int64, 1)])
@pytest.mark.parametrize("rgb", [False, True])
def test_load_faces_accepts_the_documented_formats(tmp_path, dtype, scale, rgb):
    faces, ages = synthetic_faces(5, rgb=rgb)
    save_array((faces * scale).astype(dtype), tmp_path / "f.npy.gz")
    save_array(ages, tmp_path / "a.npy")
    x, y = load_faces(tmp_path / "f.npy.gz", tmp_path / "a.npy")
    assert x.shape == (5, 3 if rgb else 1, 48, 48) and x.dtype == torch.float32
    expected = torch.as_tensor(faces.astype(np.float32) / 127.5 - 1).reshape(5, 48, 48, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(y, torch.as_tensor(ages))


@pytest.mark.parametrize("faces, ages, message", [
    (np.zeros((4, 28, 28), np.uint8), np.zeros(4), "shape (4, 28, 28), expected (N, 48, 48) grayscale"),
    (np.zeros((4, 3, 48, 48), np.uint8), np.zeros(4), "expected (N, 48, 48) grayscale or (N, 48, 48, 3)"),
    (np.zeros((4, 48, 48), np.uint8), np.zeros(5), "holds 4 faces but"),
    (np.zeros((4, 48, 48), np.uint8), np.zeros((4, 2)), "expected a numeric (N,) array"),
    (np.full((4, 48, 48), 300.0), np.zeros(4), "expected 0–255 (uint8)"),
    (np.full((4, 48, 48), -0.5), np.zeros(4), "expected 0–255 (uint8)"),
    (np.zeros((4, 48, 48), bool), np.zeros(4), "dtype bool, expected uint8"),
    (np.zeros((4, 48, 48), np.uint8), np.array([1, 2, np.nan, 4]), "NaN"),
])
def test_load_faces_rejects_bad_files_in_one_line(tmp_path, faces, ages, message):
    np.save(tmp_path / "f.npy", faces)
    np.save(tmp_path / "a.npy", ages)
    with pytest.raises(SystemExit) as e:
        load_faces(tmp_path / "f.npy", tmp_path / "a.npy")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_or_corrupt_files_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="not found: put the course file there"):
        load_faces(tmp_path / "nope.npy.gz", tmp_path / "a.npy")
    (tmp_path / "bad.npy.gz").write_bytes(b"not gzip")
    with pytest.raises(SystemExit, match="not a readable .npy.gz array"):
        load_faces(tmp_path / "bad.npy.gz", tmp_path / "a.npy")


def test_from_utkface_converts_a_folder_of_jpegs(tmp_path):
    from PIL import Image
    src = tmp_path / "UTKFace"
    src.mkdir()
    names = {"23_0_1_20170116174525125.jpg.chip.jpg": (23, 200), "7_1_0_20170109150557335.jpg": (7, 60),
             "101_0_0_20170112213500903.jpg": (101, 140)}
    for name, (_, grey) in names.items():
        im = np.zeros((40, 80, 3), np.uint8)     # 80 wide, 40 high: black sides, grey centre square
        im[:, 20:60] = grey
        Image.fromarray(im).save(src / name, quality=95)
    (src / "README.txt").write_text("not a face")
    (src / "30_0_0_20170101000000000.jpg").write_bytes(b"truncated")
    faces, ages = tmp_path / "faces.npy.gz", tmp_path / "ages.npy"
    script = load_script("06_faces.py")
    assert script.main(["--from-utkface", str(src), "--faces", str(faces), "--ages", str(ages)]) == \
        {"converted": 3, "skipped": 2}
    x, y = load_faces(faces, ages)
    order = sorted(names)                        # files are read in name order
    assert y.tolist() == [names[n][0] for n in order]
    # centre crop: only the grey square survives, so every pixel is (close to) its grey level
    grey = torch.tensor([names[n][1] for n in order], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), grey, atol=0.03, rtol=0)
    script.main(["--from-utkface", str(src), "--faces", str(faces), "--ages", str(ages), "--rgb"])
    assert load_faces(faces, ages)[0].shape == (3, 3, 48, 48)


# --- Problem 2: merging ---

def test_merge_halves_is_left_of_the_first_and_right_of_the_second():
    a, b = torch.zeros(2, 1, 4, 6), torch.ones(2, 1, 4, 6)
    m = merge_halves(a, b)
    assert torch.equal(m[..., :3], a[..., :3]) and torch.equal(m[..., 3:], b[..., 3:])


def test_sampling_from_T_is_algorithm_2():
    sched = ddpm_schedule(20, 1e-3, 0.2)
    model, x_T = ExactDenoiser(GaussianData(sched)), torch.randn(3, 1, 8, 8)
    a = ddpm_sample(model, x_T, sched, generator=torch.Generator().manual_seed(5))
    b = ddpm_sample_from(model, x_T, 20, sched, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_merge_at_small_t_keeps_each_half_and_large_t_forgets_it():
    sched = ddpm_schedule(100, 1e-3, 0.2)
    model = ExactDenoiser(GaussianData(sched))
    faces = torch.as_tensor(synthetic_faces(10, seed=3)[0]).float().unsqueeze(1) / 127.5 - 1
    x1, x2 = faces[:5], faces[5:]
    left, right = (..., slice(0, 24)), (..., slice(24, 48))
    rmse = {}
    for t in (2, 100):
        torch.manual_seed(t)
        zt1 = sched.alpha_bar[t].sqrt() * x1 + (1 - sched.alpha_bar[t]).sqrt() * torch.randn_like(x1)
        zt2 = sched.alpha_bar[t].sqrt() * x2 + (1 - sched.alpha_bar[t]).sqrt() * torch.randn_like(x2)
        x = ddpm_sample_from(model, merge_halves(zt1, zt2), t, sched)
        rmse[t] = [(x[h] - src[h]).pow(2).mean().sqrt().item() for h, src in
                   [(left, x1), (left, x2), (right, x2), (right, x1)]]
    own_left, other_left, own_right, other_right = rmse[2]
    assert own_left < 0.3 * other_left and own_right < 0.3 * other_right
    assert rmse[100][0] > 3 * own_left   # from t = T the faces are (nearly) forgotten


# --- Problem 3: age guidance ---

def test_log_prob_is_the_unit_gaussian_and_its_gradient_is_y_minus_f_times_grad_f():
    torch.manual_seed(0)
    f = AgeRegressor(hidden=4, image_size=8).eval()
    xt, t, y = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5), torch.tensor([18.0, 40.0, 80.0])
    torch.testing.assert_close(f.log_prob(xt, t, y), -0.5 * (f(xt, t) - y) ** 2)
    x = xt.clone().requires_grad_(True)
    (grad_f,) = torch.autograd.grad(f(x, t).sum(), x)
    expected = (y - f(xt, t)).detach().reshape(-1, 1, 1, 1) * grad_f
    torch.testing.assert_close(grad_log_prob(f, xt, t, y), expected)


def test_exact_guide_moves_brightness_age_monotonically_to_the_target():
    # Handout C's step adds s·∇ log P with no Σ_t factor; this guide is so sharp at large t (its
    # ∇f grows like 1/√ᾱ_t) that s·625·s_m² must stay below 2 for the steps not to overshoot
    data = GaussianData(ddpm_schedule(100, 1e-3, 0.2))
    ages = guided_ages(ExactAgeGuide(data).eval(), data, size=16, s=0.02).mean(dim=1)
    assert torch.all(ages[1:] > ages[:-1] + 10), ages
    torch.testing.assert_close(ages, torch.tensor(TARGETS), atol=3.0, rtol=0)
    unguided = guided_ages(ExactAgeGuide(data).eval(), data, size=16, s=0.0).mean(dim=1)
    assert torch.all((unguided - 50).abs() < 15), unguided   # s = 0: the prior, 50 ± 15


def test_trained_tiny_regressor_guides_monotonically():
    torch.manual_seed(0)
    data, size = GaussianData(ddpm_schedule(50, 2e-3, 0.4)), 16
    x = data.sample(1024, size, torch.Generator().manual_seed(1))
    y = brightness_age(x)                                  # "age" = mean brightness, mapped to 0–100
    regressor = AgeRegressor(hidden=8, image_size=size, age_mean=y.mean(), age_std=y.std())
    args = type("Args", (), dict(lr=3e-3, epochs=8, lr_decay_to=0.3))
    optimizer, lr_scheduler, scaler = make_optimizer(regressor, args, torch.device("cpu"))
    regressor_loss = load_script("06_faces.py").regressor_loss
    for epoch in range(1, 9):
        fit_epoch(regressor, optimizer, scaler, regressor_loss, {"x0": x, "y": y}, 64, f"epoch {epoch}",
                  sched=data.sched)
        lr_scheduler.step()
    rmse = (predict_age(regressor.eval(), x[:256], 1, data.sched) - y[:256]).pow(2).mean().sqrt()
    assert rmse < 5, rmse                                   # it has learned the brightness
    ages = guided_ages(regressor, data, size=size, s=0.02).mean(dim=1)
    assert torch.all(ages[1:] > ages[:-1] + 5), ages


class ScaleRecorder:
    """Stands in for classifier_guided_sample: records the step scale it is given, returns x_T unchanged."""

    def __init__(self):
        self.scales = []

    def __call__(self, model, guide, x_T, y, s, *args, **kwargs):
        self.scales.append(s)
        return x_T


def test_06_age_guidance_scales_the_handouts_gradient_and_stops_when_it_blows_up(monkeypatch):
    # --guidance-scale multiplies Handout C's −∂(ŷ − y)²/∂z_t = 2 ∇ log N(y; ŷ, 1): 0.01 there is the 0.02
    # on ∇ log N that brings the exact guide to its targets above; far too large a scale is one clear line
    data, m = GaussianData(ddpm_schedule(100, 1e-3, 0.2)), load_script("06_faces.py")
    args = argparse.Namespace(target_ages=TARGETS, per_age=6, seed=0, eval_batch=100, guidance_scale=0.01,
                              sigma="beta")
    images, y = m.age_guided(args, ExactDenoiser(data), ExactAgeGuide(data).eval(), data.sched, (1, 16, 16),
                             torch.device("cpu"))
    assert y.tolist() == [a for a in TARGETS for _ in range(6)]
    ages = brightness_age(images).reshape(4, 6).mean(dim=1)
    torch.testing.assert_close(ages, torch.tensor(TARGETS), atol=3.0, rtol=0)
    args.guidance_scale = 0.2
    with pytest.raises(SystemExit, match="age guidance diverged at --guidance-scale 0.2"):
        m.age_guided(args, ExactDenoiser(data), ExactAgeGuide(data).eval(), data.sched, (1, 16, 16),
                     torch.device("cpu"))
    recorder = ScaleRecorder()
    monkeypatch.setattr(m, "classifier_guided_sample", recorder)
    m.age_guided(args, None, None, data.sched, (1, 16, 16), torch.device("cpu"))
    assert recorder.scales == [0.4]                        # 2 × 0.2: the step on ∇ log N(y; ŷ, 1)



class InflatingDenoiser(nn.Module):
    """Stands in for a weak DDPM whose own samples leave [-1, 1] far behind: ε̂ = −x_t pushes each mean outwards."""

    def forward(self, xt, t_frac):
        return -xt


def test_06_pixels_the_unguided_ddpm_also_pushes_beyond_10_are_a_note_not_an_error(capsys):
    # found on real images (MNIST digits at 48×48, --quick): the range check stopped the run, blaming the
    # guidance, even at --guidance-scale 0; now it compares with the same x_T and noise unguided
    data, m = GaussianData(ddpm_schedule(100, 1e-3, 0.2)), load_script("06_faces.py")
    for scale in (0.0, 0.01):
        args = argparse.Namespace(target_ages=TARGETS, per_age=2, seed=0, eval_batch=100, guidance_scale=scale,
                                  sigma="beta")
        images, _ = m.age_guided(args, InflatingDenoiser(), ExactAgeGuide(data).eval(), data.sched, (1, 16, 16),
                                 torch.device("cpu"))
        assert torch.isfinite(images).all() and images.abs().max() > 10
        assert "the DDPM itself, not --guidance-scale" in capsys.readouterr().out


# --- the script ---

def test_dry_run_writes_every_file_and_resume_redraws_them(tmp_path):
    script = load_script("06_faces.py")
    metrics = script.main(["--dry-run", "--out-dir", str(tmp_path)])
    for name in ["config.json", "losses.csv", "loss_curve.png", "checkpoint.pt", "samples_epoch_002.png",
                 "regressor_losses.csv", "regressor_loss_curve.png", "regressor.pt", "samples.npz",
                 "samples_final.png", "merged.npz", "merged.png", "age_guided.npz", "age_guided.png",
                 "metrics.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    samples = np.load(tmp_path / "samples.npz")["images"]
    assert samples.shape == (20, 48, 48) and samples.dtype == np.uint8
    merged = np.load(tmp_path / "merged.npz")
    assert merged["merged"].shape == (4, 5, 48, 48) and merged["faces_1"].shape == (5, 48, 48)
    guided = np.load(tmp_path / "age_guided.npz")
    assert guided["images"].shape == (12, 48, 48)
    assert guided["target_ages"].tolist() == [18] * 3 + [40] * 3 + [60] * 3 + [80] * 3
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["data"]["n_age_excluded"] > 0 and set(saved["guided_predicted_age_t1"]) == {"18", "40", "60", "80"}
    assert np.isfinite(saved["regressor_val_rmse_t1_years"])
    assert saved["merge_half_rmse"].keys() == {"2", "5", "8", "9"}
    assert saved["sampler"] == "Algorithm 18.2, σ_t = √β_t"
    assert json.loads((tmp_path / "config.json").read_text())["image_channels"] == 1
    # --resume: both checkpoints are complete, so nothing trains and the figures are redrawn
    again = script.main(["--dry-run", "--out-dir", str(tmp_path), "--resume"])
    assert again["ddpm_final_epoch_loss"] == metrics["ddpm_final_epoch_loss"]
    assert again["regressor_final_epoch_mse"] == metrics["regressor_final_epoch_mse"]


def test_resume_checks_regressor_pt_before_training_the_ddpm(tmp_path, capsys):
    """A regressor.pt of another width stops --resume at once, before the DDPM is built or config.json written."""
    torch.save({"model": {}, "epoch": 1, "args": {"hidden": 99, "T": 10, "image_channels": 1}},
               tmp_path / "regressor.pt")
    with pytest.raises(SystemExit, match="regressor.pt was trained with --hidden 99, not 8"):
        load_script("06_faces.py").main(["--dry-run", "--out-dir", str(tmp_path), "--resume"])
    assert "DenoisingUNet" not in capsys.readouterr().out and not (tmp_path / "config.json").exists()


def test_bad_arguments_are_one_line_errors(tmp_path):
    script = load_script("06_faces.py")
    with pytest.raises(SystemExit):
        script.parse_args(["--T", "100", "--merge-ts", "50", "500"])
    with pytest.raises(SystemExit):                       # Handout C 2(b): t < T
        script.parse_args(["--T", "100", "--merge-ts", "50", "100"])
    assert script.parse_args(["--T", "100", "--merge-ts", "50", "99"]).merge_ts == [50, 99]
    with pytest.raises(SystemExit, match="faces file .* not found"):
        script.main(["--faces", str(tmp_path / "x.npy"), "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a folder"):
        script.main(["--from-utkface", str(tmp_path / "missing")])
