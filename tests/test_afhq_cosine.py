"""07_afhq_cosine.py (Handout E §7): Eq. 14's cosine schedule, Algorithm 2 with the clamp and Eq. 18 (by hand), the
L1 loss, the 0–99 % timesteps, the multi-resolution UNet, AFHQ folder loading, and the script end to end."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from common.data import load_afhq, synthetic_afhq, to_uint8
from common.inception import InceptionFeatures
from common import samplers
from common.samplers import ddpm_sample, posterior_mean, step_sigma
from common.schedules import cosine_schedule
from common.unets import MultiResUNet
from conftest import load_script

M = load_script("07_afhq_cosine.py")


def eq14_alpha(T, s=0.008):
    """Handout E Eq. 14 by hand in float64: (ᾱ_t of Eq. 14 for t = 0..T, α_t = clip(ᾱ_t / ᾱ_{t−1}, 0.001, 1))."""
    f = [math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2 for t in range(T + 1)]
    alpha_bar = [f_t / f[0] for f_t in f]
    return alpha_bar, [1.0] + [min(max(alpha_bar[t] / alpha_bar[t - 1], 0.001), 1.0) for t in range(1, T + 1)]


def hand_step(xt, eps, t, T):
    """Handout E Algorithm 2, lines 5–8, by hand in float64 from Eq. 14 and Eq. 18: (μ̃_t, σ_t²)."""
    alpha = eq14_alpha(T)[1]
    alpha_bar = np.cumprod(alpha)                                   # Eq. 17: ᾱ_t = ∏ α_i of the clipped α
    a, ab, ab_prev = alpha[t], alpha_bar[t], alpha_bar[t - 1]
    x0_hat = ((xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)                   # lines 5–6
    mean = math.sqrt(a) * (1 - ab_prev) / (1 - ab) * xt + math.sqrt(ab_prev) * (1 - a) / (1 - ab) * x0_hat   # line 7
    return mean, (1 - ab_prev) / (1 - ab) * (1 - a)                                          # line 8


class FixedEps(nn.Module):
    """A deterministic stand-in for ε_θ(x_t, t) that depends on both inputs."""

    def forward(self, xt, t_frac):
        return 1.5 * torch.tanh(xt) + 0.3 * t_frac.reshape(-1, 1, 1, 1)


class ZeroEps(nn.Module):
    """ε_θ = 0 for any input (its one parameter gets a zero gradient, so Adam leaves it there)."""

    def __init__(self, *args):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, xt, t_frac):
        return 0 * self.w * xt


class StandInFeatures(InceptionFeatures):
    """InceptionFeatures with a stand-in network (2×2 average pooling of the resized images: 12 features);
    records each instance's resize and how many images every stats() call reads."""

    resizes, reads = [], []

    def __init__(self, device, weights=None, resize="pytorch-fid"):
        super().__init__(device, resize=resize, net=nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()))
        self.resizes.append(resize)
        torch.randn(3)   # like a real network's initialisation, this draws from the global random stream

    def stats(self, x):
        self.reads.append(len(x))
        return super().stats(x)


@pytest.fixture
def no_figures(monkeypatch):
    """Runs whose figures are not under test skip drawing them (matplotlib takes most of a dry run's time)."""
    for name in ("save_grid", "save_labelled_grid", "save_curves", "save_line_plot"):
        monkeypatch.setattr(M, name, lambda *args, **kwargs: None)


# --- the cosine schedule, Eq. 14 ---

def test_cosine_alpha_bar_matches_eq14_and_the_clip():
    for T in (1, 2, 10, 50, 1000):
        sched, (alpha_bar, alpha) = cosine_schedule(T), eq14_alpha(T)
        assert sched.T == T and sched.alpha_bar[0] == 1 and sched.beta[0] == 0
        # t < T: exactly Eq. 14; t = T, where Eq. 14 gives ᾱ_T = 0: the clip makes it 0.001 ᾱ_{T−1}
        assert max(abs(float(sched.alpha_bar[t]) - alpha_bar[t]) for t in range(T)) < 1e-12
        assert float(sched.alpha_bar[T]) == pytest.approx(0.001 * alpha_bar[T - 1], rel=1e-9)
        torch.testing.assert_close(sched.alpha, torch.tensor(alpha, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(sched.beta, 1 - sched.alpha)
        torch.testing.assert_close(sched.alpha_bar, torch.cumprod(sched.alpha, 0))
    assert float(cosine_schedule(50).alpha[50]) == pytest.approx(0.001)   # the clip acts at t = T
    assert float(cosine_schedule(50).alpha[1:50].min()) > 0.001           # and only there


# --- Algorithm 2: the clamp of x̂0, Eq. 18's posterior mean and variance ---

def test_posterior_step_clamps_x0_and_matches_eq18():
    T, sched = 50, cosine_schedule(50)
    g = torch.Generator().manual_seed(0)
    xt, eps = 2 * torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    for t in (1, 2, 25, 49, 50):
        mean, var = hand_step(xt.double(), eps.double(), t, T)
        torch.testing.assert_close(posterior_mean(xt, eps, t, sched, clip_x0=True).double(), mean,
                                   atol=1e-5, rtol=1e-5)
        assert step_sigma(sched, t, "posterior") ** 2 == pytest.approx(var, rel=1e-9, abs=1e-15)
    ab = float(sched.alpha_bar[25])
    assert ((xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).abs().max() > 1        # the clamp acts here …
    assert not torch.allclose(posterior_mean(xt, eps, 25, sched), posterior_mean(xt, eps, 25, sched, clip_x0=True))
    assert step_sigma(sched, 1, "posterior") == 0                                        # … and σ_1 = 0: x_0 = μ̃_1


def test_backward_process_is_algorithm_2_stopped_at_each_shown_step():
    T, shape = 5, (3, 3, 4, 4)
    sched, model = cosine_schedule(T), FixedEps()
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    # Algorithm 2 by hand, z drawn in the samplers' order (t = T, ..., 2) from the same seed
    g, x, by_hand = torch.Generator().manual_seed(7), x_T.double(), {}
    for t in range(T, 0, -1):
        z = torch.randn(shape, generator=g).double() if t > 1 else torch.zeros(shape, dtype=torch.float64)
        mean, var = hand_step(x, model(x.float(), torch.full((3,), t / T)).double(), t, T)
        x = by_hand[t] = mean + math.sqrt(var) * z                         # x_{t−1}, the output of step t
    g = torch.Generator().manual_seed(7)
    sampled = ddpm_sample(model, x_T, sched, sigma="posterior", clip_x0=True, generator=g)
    torch.testing.assert_close(sampled.double(), by_hand[1], atol=1e-4, rtol=1e-4)
    kept = M.backward_process(model, sched, x_T, [1, 3, 3, 5], torch.Generator().manual_seed(7))
    assert sorted(kept) == [1, 3, 5]
    for t in (5, 3, 1):
        torch.testing.assert_close(kept[t].double(), by_hand[t], atol=1e-4, rtol=1e-4)


def test_fraction_timesteps():
    assert M.fraction_timesteps(50) == [1, 13, 26, 38, 50]     # the starter code's k = int(p·T) = 0, 12, 25, 37, 49
    assert M.fraction_timesteps(1000) == [1, 251, 501, 751, 991]
    assert M.fraction_timesteps(10) == [1, 3, 6, 8, 10]
    assert M.fraction_timesteps(1) == [1, 1, 1, 1, 1]


# --- the multi-resolution UNet ---

@pytest.mark.parametrize("size, dim_mults", [(32, (1, 2, 4, 8)), (16, (1, 2)), (8, (2,))])
def test_multires_unet_keeps_shapes_and_uses_every_level(size, dim_mults):
    torch.manual_seed(0)
    net = MultiResUNet(3, dim=4, dim_mults=dim_mults)
    x = torch.randn(2, 3, size, size)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, torch.tensor([0.5, 0.5])))   # t changes the prediction
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    if len(dim_mults) > 1:
        with pytest.raises(ValueError, match="not divisible"):
            net(torch.randn(1, 3, size + 1, size + 1), torch.ones(1))


# --- AFHQ from a folder ---

def test_load_afhq_from_a_folder_of_jpegs(tmp_path):
    images = to_uint8(synthetic_afhq(6, size=48, seed=3))                   # (6, 48, 48, 3)
    folder = tmp_path / "afhq" / "train" / "cat"
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image")
    x = load_afhq(tmp_path / "afhq", "cat", 24)
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    # 48 -> 24 is a 2× reduction: close to the 2×2 block means of the originals (JPEG loses a little)
    reference = nn.functional.avg_pool2d(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, 2)
    assert (x - reference).abs().mean() < 0.05
    with pytest.raises(SystemExit, match=r"^error: no AFHQ folder .*train/dog/: pass --data-dir"):
        load_afhq(tmp_path / "afhq", "dog", 24)
    (tmp_path / "afhq" / "train" / "wild").mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*wild/ holds no .jpg, .jpeg or .png images$"):
        load_afhq(tmp_path / "afhq", "wild", 24)
    (folder / "000099.jpg").write_bytes(b"truncated")
    with pytest.raises(SystemExit, match=r"^error: cannot read image .*000099.jpg \(UnidentifiedImageError\)"):
        load_afhq(tmp_path / "afhq", "cat", 24)


# --- the script end to end ---

def test_dry_run_writes_every_file_and_resume_continues_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "find_weights", lambda path=None: "stand-in")
    monkeypatch.setattr(M, "InceptionFeatures", StandInFeatures)
    StandInFeatures.resizes.clear()
    StandInFeatures.reads.clear()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    metrics = M.main(["--dry-run", "--fid", "--out-dir", str(straight)])
    for name in ["config.json", "losses.csv", "loss_curve.png", "samples_step_000002.png", "samples_step_000004.png",
                 "fid.csv", "fid.png", "fid_train_stats.pt", "samples_final.png", "forward_process.png",
                 "backward_process.png", "samples.npz", "checkpoint.pt", "metrics.json"]:
        assert (straight / name).stat().st_size > 0, name
    for png in straight.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, png
    samples = np.load(straight / "samples.npz")["images"]
    assert samples.shape == (8, 32, 32, 3) and samples.dtype == np.uint8
    assert len((straight / "losses.csv").read_text().splitlines()) == 1 + 4
    assert json.loads((straight / "metrics.json").read_text()) == metrics
    assert metrics["steps"] == 4 and metrics["sampler"] == "Algorithm 2" and metrics["n_samples"] == 8
    # FID: clean-fid's resize; the 32 training images read once, then 8 samples at each save step
    assert StandInFeatures.resizes == ["clean-fid"] and StandInFeatures.reads == [32, 8, 8]
    assert [(h["step"], h["n_samples"]) for h in metrics["fid"]] == [(2, 8), (4, 8)]
    assert all(0 < h["fid"] < math.inf for h in metrics["fid"])
    assert [row.split(",")[0] for row in (straight / "fid.csv").read_text().splitlines()] == ["step", "2", "4"]
    stats = torch.load(straight / "fid_train_stats.pt", weights_only=True)
    assert stats["key"] == {"data_dir": "synthetic", "data_class": "cat", "image_size": 32, "n_images": 32}
    assert stats["mu"].shape == (12,) and stats["sigma"].shape == (12, 12)
    # the same run in two parts: 2 steps, then --resume to 4, gives the same model, losses, FIDs and samples
    for name in ("save_grid", "save_labelled_grid", "save_curves", "save_line_plot"):   # not under test here
        monkeypatch.setattr(M, name, lambda *args, **kwargs: None)
    M.main(["--dry-run", "--fid", "--train-steps", "2", "--out-dir", str(resumed)])
    StandInFeatures.reads.clear()
    M.main(["--dry-run", "--fid", "--train-steps", "4", "--out-dir", str(resumed), "--resume"])
    assert StandInFeatures.reads == [8]                  # the training images' statistics come from the file
    a, b = (torch.load(folder / "checkpoint.pt", weights_only=True) for folder in (straight, resumed))
    assert a["step"] == b["step"] == 4 and a["bound"] == "train_steps"
    assert a["losses"] == b["losses"] and len(a["losses"]) == 4 and a["fid"] == b["fid"]
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert np.array_equal(np.load(resumed / "samples.npz")["images"], samples)
    # --resume refuses another architecture, and fewer steps than were trained, before anything is built
    with pytest.raises(SystemExit, match="checkpoint.pt was trained with --hidden 4, not 8"):
        M.main(["--dry-run", "--out-dir", str(resumed), "--resume", "--hidden", "8"])
    with pytest.raises(SystemExit, match="checkpoint.pt has trained 4 steps, more than --train-steps 3"):
        M.main(["--dry-run", "--out-dir", str(resumed), "--resume", "--train-steps", "3"])


def test_the_loss_is_l1_a_zero_model_scores_mean_abs_eps(tmp_path, monkeypatch, no_figures):
    monkeypatch.setattr(M, "MultiResUNet", ZeroEps)
    M.main(["--dry-run", "--train-steps", "3", "--out-dir", str(tmp_path)])
    losses = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["losses"]
    # E|ε| = √(2/π) = 0.798 for ε ~ N(0, 1); a batch of 8 × 3 × 32 × 32 values has a standard error of 0.004
    # (the squared error would give 1, an error in x0 would depend on the images)
    assert len(losses) == 3 and all(abs(loss - math.sqrt(2 / math.pi)) < 0.02 for loss in losses), losses


@pytest.mark.parametrize("sampler, name, first", [("ddpm", "Algorithm 2", ("ddpm", "posterior", True)),
                                                  ("ddim", "DDIM, 3 steps, η = 0", ("ddim", 3, 0.0, True))])
def test_grids_and_samples_are_algorithm_2_with_the_clamp_or_ddim(tmp_path, monkeypatch, no_figures, sampler, name,
                                                                  first):
    calls = []
    monkeypatch.setattr(samplers, "ddim_sample", lambda model, x, sched, steps, eta, c, gamma, clip_x0, generator:
                        calls.append(("ddim", steps, eta, clip_x0)) or x)
    for module in (M, samplers):   # the 7.5 figure calls ddpm_sample itself, the grids through draw_samples
        monkeypatch.setattr(module, "ddpm_sample", lambda model, x, sched, *args, **kw: calls.append(
            ("ddpm", kw["sigma"], kw["clip_x0"])) or x)
    metrics = M.main(["--dry-run", "--sampler", sampler, "--sample-steps", "3", "--eta", "0",
                      "--out-dir", str(tmp_path)])
    assert metrics["sampler"] == name
    # two grids and the final samples by --sampler (x̂0 clamped); 7.5 by Algorithm 2, stopping at t = 5, 4, 3, 2, 1
    assert calls == [first] * 3 + [("ddpm", "posterior", True)] * 5


def test_fid_without_weights_fails_before_anything_is_written(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"^error: --inception-weights .*nope.pth: no such file"):
        M.main(["--dry-run", "--fid", "--inception-weights", str(tmp_path / "nope.pth"), "--out-dir", str(tmp_path)])
    (tmp_path / "bad.pth").write_bytes(b"half a file")                  # there, but it cannot be read
    with pytest.raises(SystemExit, match=r"^error: \S+bad.pth is not a readable weights file"):
        M.main(["--dry-run", "--fid", "--inception-weights", str(tmp_path / "bad.pth"), "--out-dir",
                str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(M, "find_weights", lambda path=None: None)
    with pytest.raises(SystemExit, match=r"^error: --fid needs the FID Inception weights, which are not here: "):
        M.main(["--dry-run", "--fid", "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "36"], "--image-size 36 must divide by 2^(levels − 1) = 8"),
    (["--image-size", "36", "--dim-mults", "1", "2"], None),
    (["--data-class", "horse"], "argument --data-class: invalid choice: 'horse'"),
    (["--sampler", "ddim", "--sample-steps", "51"], "--sample-steps 51 is more than --T 50"),
    (["--n-vis", "40"], "--n-vis 40 cannot exceed --batch-size 32"),
    (["--lr", "-1e-3"], "argument --lr: invalid positive number value: '-1e-3'"),
])
def test_bad_flags_are_one_line_errors(capsys, argv, message):
    if message is None:                                   # 36 divides by 2^(2 − 1)
        assert M.parse_args(argv).image_size == 36
        return
    with pytest.raises(SystemExit):
        M.parse_args(argv)
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_a_missing_data_folder_stops_before_anything_is_written(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: no AFHQ folder .*missing/train/cat/"):
        M.main(["--data-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
