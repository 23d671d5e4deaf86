"""07_afhq_cosine.py and its pieces: Eq. 14's cosine schedule, Algorithm 2 with Eq. 18 (hand-computed),
the L1 loss, the 0–99% timesteps, the multi-resolution UNet, AFHQ folder loading, and the script end to end."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.afhq import load_afhq, synthetic_afhq, write_image_folder
from common.data import to_uint8
from common.samplers import ddpm_sample, ddpm_sigma, posterior_mean
from common.schedules import cosine_schedule
from common.train import ddpm_loss
from common.unet_multires import MultiResUNet

SCRIPT = "07_afhq_cosine.py"
TINY = ["--unet-dim", "4", "--T", "10", "--batch-size", "8", "--n-samples", "8", "--n-vis", "2",
        "--eval-batch", "8", "--save-and-sample-every", "2", "--device", "cpu"]


def eq14_alpha_bar(T, s=0.008):
    """Handout E Eq. 14, by hand in float64: ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2)."""
    f = [math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2 for t in range(T + 1)]
    return [f_t / f[0] for f_t in f]


def eq14_alpha(T):
    """α_t = clip(ᾱ_t / ᾱ_{t−1}, 0.001, 1) for t = 1..T (index 0 unused)."""
    ab = eq14_alpha_bar(T)
    return [1.0] + [min(max(ab[t] / ab[t - 1], 0.001), 1.0) for t in range(1, T + 1)]


# --- the cosine schedule, Eq. 14 ---

def test_cosine_alpha_bar_matches_eq14():
    s = cosine_schedule(50)
    assert s.T == 50 and len(s.alpha_bar) == 51 and s.alpha_bar[0] == 1
    expected = eq14_alpha_bar(50)
    for t in range(51):   # every t, including t = T where the clip acts (ᾱ_T = 9.7e-7 instead of ≈ 0)
        assert abs(float(s.alpha_bar[t]) - expected[t]) < 1e-6, t
    for T in (10, 1000):  # t < T: exactly Eq. 14; t = T: the clip gives ᾱ_T = 0.001 ᾱ_{T−1}
        s, expected = cosine_schedule(T), eq14_alpha_bar(T)
        assert max(abs(float(s.alpha_bar[t]) - expected[t]) for t in range(T)) < 1e-6
        assert float(s.alpha_bar[T]) == pytest.approx(0.001 * expected[T - 1], rel=1e-5)


def test_cosine_alpha_is_clipped_to_its_range():
    for T in (1, 2, 50, 1000):
        s, expected = cosine_schedule(T), eq14_alpha(T)
        assert torch.all(s.alpha[1:] >= 0.001 - 1e-9) and torch.all(s.alpha[1:] <= 1.0)
        torch.testing.assert_close(s.alpha.double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(s.beta, 1 - s.alpha)
        torch.testing.assert_close(s.alpha_bar, torch.cumprod(s.alpha.double(), 0).float())
    assert float(cosine_schedule(50).alpha[50]) == pytest.approx(0.001)   # the clip acts at t = T
    with pytest.raises(ValueError):
        cosine_schedule(0)


# --- Algorithm 2: clamp of x̂0, Eq. 18's posterior mean and variance ---

def hand_step(xt, eps, t, T):
    """Algorithm 2, lines 5–8 by hand in float64 from Eq. 14 and Eq. 18: (μ̃_t, σ_t²)."""
    alpha = eq14_alpha(T)
    alpha_bar = np.cumprod(alpha)
    a, ab, ab_prev = alpha[t], alpha_bar[t], alpha_bar[t - 1]
    x0_hat = ((xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)               # lines 5–6
    mean = (math.sqrt(a) * (1 - ab_prev) / (1 - ab)) * xt + \
        (math.sqrt(ab_prev) * (1 - a) / (1 - ab)) * x0_hat                               # Eq. 18 μ̃_t
    return mean, (1 - ab_prev) / (1 - ab) * (1 - a)                                      # Eq. 18 σ_t²


def test_posterior_step_clamps_x0_and_matches_eq18():
    T, sched = 50, cosine_schedule(50)
    g = torch.Generator().manual_seed(0)
    xt, eps = 2 * torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    for t in (1, 2, 25, 49, 50):
        mean, var = hand_step(xt.double(), eps.double(), t, T)
        torch.testing.assert_close(posterior_mean(xt, t, eps, sched, clip_x0=True).double(), mean,
                                   atol=1e-4, rtol=1e-4)
        assert float(ddpm_sigma(sched, t, "posterior")) ** 2 == pytest.approx(var, rel=1e-4, abs=1e-9)
    # the clamp acts here (some |x̂0| > 1), so the unclamped mean differs
    ab = float(sched.alpha_bar[25])
    assert ((xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).abs().max() > 1
    assert not torch.allclose(posterior_mean(xt, 25, eps, sched), posterior_mean(xt, 25, eps, sched, True))
    assert ddpm_sigma(sched, 1, "posterior") == 0   # σ_1 = 0: x_0 = μ̃_1


class FixedEps(nn.Module):
    """A deterministic stand-in for ε_θ(x_t, t) that depends on both inputs."""

    def forward(self, xt, t_frac):
        return 1.5 * torch.tanh(xt) + 0.3 * t_frac.reshape(-1, 1, 1, 1)


def test_sampler_and_reverse_process_are_algorithm_2(script):
    T, shape = 5, (3, 3, 4, 4)
    sched, model = cosine_schedule(T), FixedEps()
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    # Algorithm 2 by hand, z drawn in the samplers' order (t = T, ..., 2) from the same seed
    g, x = torch.Generator().manual_seed(7), x_T.double()
    for t in range(T, 0, -1):
        z = torch.randn(shape, generator=g).double() if t > 1 else torch.zeros(shape, dtype=torch.float64)
        mean, var = hand_step(x, model(x.float(), torch.full((3,), t / T)).double(), t, T)
        x = mean + math.sqrt(var) * z
    sampled = ddpm_sample(model, x_T, sched, torch.Generator().manual_seed(7), clip_x0=True, sigma="posterior")
    torch.testing.assert_close(sampled.double(), x, atol=1e-4, rtol=1e-4)
    m = script(SCRIPT)
    snapshots = m.reverse_process(model, x_T, T, sched, keep=[1, 3], generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(snapshots[1], sampled)   # the output of reverse step 1 is x_0


# --- Algorithm 1: the L1 loss ---

class Zeros(nn.Module):
    def forward(self, xt, t_frac):
        return torch.zeros_like(xt)


def test_l1_loss_of_a_zero_model_is_mean_abs_eps():
    torch.manual_seed(0)
    x0 = torch.zeros(64, 3, 32, 32)
    l1 = ddpm_loss(Zeros(), x0, cosine_schedule(50), loss="l1")
    assert float(l1) == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)   # E|ε| for ε ~ N(0, 1)
    assert float(ddpm_loss(Zeros(), x0, cosine_schedule(50), loss="l2")) == pytest.approx(1.0, abs=0.02)


# --- the 0–99% timesteps of 7.4 and 7.5 ---

def test_fraction_timesteps(script):
    m = script(SCRIPT)
    assert m.fraction_timesteps(50) == [1, 13, 26, 38, 50]     # starter code: k = int(p·T) = 0, 12, 25, 37, 49
    assert m.fraction_timesteps(1000) == [1, 251, 501, 751, 991]
    assert m.fraction_timesteps(10) == [1, 3, 6, 8, 10]
    assert m.fraction_timesteps(1) == [1, 1, 1, 1, 1]


# --- the multi-resolution UNet ---

@pytest.mark.parametrize("size", [32, 64])
def test_multires_unet_keeps_shapes(size):
    torch.manual_seed(0)
    net = MultiResUNet(3, dim=4, dim_mults=(1, 2, 4, 8))
    x = torch.randn(2, 3, size, size)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, torch.tensor([0.5, 0.5])))   # t changes the prediction
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())          # every level and FCBlock is used


def test_multires_unet_defaults_and_bad_size():
    net = MultiResUNet()   # --unet-dim 16, --dim-mults 1 2 4 8
    assert [d.net[0].net[0].out_channels for d in net.downs] == [32, 64, 128]
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 3, 36, 36), torch.ones(1))


# --- AFHQ folder loading ---

def test_load_afhq_from_a_folder_of_jpegs(tmp_path, monkeypatch):
    images = to_uint8(synthetic_afhq(6, size=48, seed=3))
    write_image_folder(images, tmp_path / "afhq" / "train" / "cat")
    x = load_afhq(tmp_path / "afhq", "cat", 24, cache_dir=tmp_path)
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32
    assert -1 <= x.min() and x.max() <= 1
    # 48 -> 24 is a 2× reduction: compare with the 2×2 block means of the originals (JPEG loses a little)
    reference = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    reference = nn.functional.avg_pool2d(reference, 2)
    assert (x - reference).abs().mean() < 0.1
    # the second load reads the cache, no decoding
    with monkeypatch.context() as m:
        m.setattr("common.afhq.decode", lambda *a: pytest.fail("decoded again"))
        torch.testing.assert_close(load_afhq(tmp_path / "afhq", "cat", 24, cache_dir=tmp_path), x)
    # a changed image file, or a cache in the old format ({"key": file names, "images"}), is decoded again
    first = sorted((tmp_path / "afhq" / "train" / "cat").iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")                 # same name, other size
    torch.testing.assert_close(load_afhq(tmp_path / "afhq", "cat", 24, cache_dir=tmp_path), x)
    cache = tmp_path / "afhq_cat_24.pt"
    torch.save({"key": torch.load(cache)["key"], "images": torch.zeros(6, 24, 24, 3, dtype=torch.uint8)}, cache)
    torch.testing.assert_close(load_afhq(tmp_path / "afhq", "cat", 24, cache_dir=tmp_path), x)


def test_missing_or_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: no AFHQ folder .*train/cat"):
        load_afhq(tmp_path / "nowhere", "cat", 32)
    (tmp_path / "afhq" / "train" / "dog").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"^error: .*holds no \.jpg"):
        load_afhq(tmp_path / "afhq", "dog", 32)


# --- the script end to end ---

def test_dry_run_writes_every_file(script, tmp_path, monkeypatch):
    m = script(SCRIPT)
    calls = {"loss": [], "sample": []}
    real_loss, real_generate = m.ddpm_loss, m.generate
    monkeypatch.setattr(m, "ddpm_loss", lambda *a, **k: calls["loss"].append(k) or real_loss(*a, **k))
    monkeypatch.setattr(m, "generate", lambda *a, **k: calls["sample"].append((a[3], k)) or real_generate(*a, **k))
    out = tmp_path / "out"
    metrics = m.main(["--dry-run", "--out-dir", str(out), "--device", "cpu"])
    # Algorithm 1 with the L1 loss at every step; Algorithm 2 with the clamp and Eq. 18's variance
    assert len(calls["loss"]) == 4 and all(k == {"loss": "l1"} for k in calls["loss"])
    assert calls["sample"] and all(sampler == "ddpm" and k["clip_x0"] and k["sigma"] == "posterior"
                                   for sampler, k in calls["sample"])
    assert metrics["sampler"] == "Algorithm 2"
    for name in ["config.json", "losses.csv", "loss_curve.png", "samples_step_000002.png",
                 "samples_step_000004.png", "samples_final.png", "forward_process.png",
                 "backward_process.png", "samples.npz", "checkpoint.pt", "metrics.json"]:
        assert (out / name).stat().st_size > 0, name
    assert not (out / "fid.png").exists()   # no --fid, no FID figure
    with np.load(out / "samples.npz") as f:
        assert f["images"].shape == (16, 32, 32, 3) and f["images"].dtype == np.uint8
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + 4
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["steps"] == 4 and metrics["fid"] is None and 0.3 < metrics["final_l1_loss_last_100_steps"] < 1.5


def test_dry_run_with_ddim_samples_with_ddim_and_says_so(script, tmp_path, monkeypatch):
    """--sampler ddim (issue 8) draws the grids and samples.npz with DDIM, x̂0 clamped as in 07's Algorithm 2."""
    m = script(SCRIPT)
    calls = []
    real_generate = m.generate
    monkeypatch.setattr(m, "generate", lambda *a, **k: calls.append((a[3:6], k["clip_x0"])) or real_generate(*a, **k))
    out = tmp_path / "out"
    metrics = m.main(["--dry-run", "--sampler", "ddim", "--sample-steps", "3", "--eta", "1", "--out-dir", str(out),
                      "--device", "cpu"])
    assert calls and all(call == (("ddim", 3, 1.0), True) for call in calls)
    assert metrics["sampler"] == "DDIM, 3 steps, η = 1"
    assert (out / "samples.npz").stat().st_size > 0 and (out / "backward_process.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        m.parse_args(["--sampler", "ddim", "--sample-steps", "51"])   # more DDIM steps than T = 50


def test_fid_without_weights_fails_before_training(script, tmp_path, monkeypatch):
    m = script(SCRIPT)
    monkeypatch.setattr(m, "find_weights", lambda path=None: None)
    with pytest.raises(SystemExit, match=r"^error: --fid needs the FID Inception weights"):
        m.main(["--dry-run", "--fid", "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()   # nothing trained, nothing written


def test_fid_with_named_weights_that_do_not_exist_names_them(script, tmp_path):
    with pytest.raises(SystemExit, match=r"--inception-weights .*nope.pth: no such file"):
        script(SCRIPT).main(["--dry-run", "--fid", "--inception-weights", str(tmp_path / "nope.pth"),
                             "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_fid_curve_with_a_stand_in_fid(script, tmp_path, monkeypatch):
    m = script(SCRIPT)
    monkeypatch.setattr(m, "find_weights", lambda path=None: "weights.pth")
    monkeypatch.setattr(m, "fid_reference", lambda x_train, args, device, out: "reference statistics")
    monkeypatch.setattr(m, "fid_of_samples", lambda samples, fid_ref: 100.0 / len(samples))
    out = tmp_path / "out"
    metrics = m.main(["--dry-run", "--fid", "--out-dir", str(out), "--device", "cpu"])
    assert [(h["step"], h["n_samples"]) for h in metrics["fid"]] == [(2, 16), (4, 16)]
    assert (out / "fid.png").stat().st_size > 0
    assert (out / "fid.csv").read_text().splitlines()[1:] == ["2,6.2500,16,64", "4,6.2500,16,64"]


def test_resume_continues_exactly_on_a_jpeg_folder(script, tmp_path):
    m = script(SCRIPT)
    write_image_folder(to_uint8(synthetic_afhq(16, size=32)), tmp_path / "afhq" / "train" / "cat")
    data = ["--data-dir", str(tmp_path / "afhq")] + TINY
    m.main(data + ["--train-steps", "4", "--out-dir", str(tmp_path / "straight")])
    m.main(data + ["--train-steps", "2", "--out-dir", str(tmp_path / "resumed")])
    m.main(data + ["--train-steps", "4", "--out-dir", str(tmp_path / "resumed"), "--resume"])
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4 and a["losses"] == b["losses"]
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    with np.load(tmp_path / "straight" / "samples.npz") as fa, np.load(tmp_path / "resumed" / "samples.npz") as fb:
        assert np.array_equal(fa["images"], fb["images"])
    # a checkpoint of another architecture is refused with a one-line error, and config.json is kept
    config = (tmp_path / "resumed" / "config.json").read_text()
    with pytest.raises(SystemExit, match="--unet-dim"):
        m.main(data + ["--train-steps", "6", "--out-dir", str(tmp_path / "resumed"), "--resume",
                       "--unet-dim", "8"])
    # so is one that would continue with another learning rate (the optimiser state would keep the old one)
    with pytest.raises(SystemExit, match="trained with --lr 0.001, not 0.5"):
        m.main(data + ["--train-steps", "6", "--out-dir", str(tmp_path / "resumed"), "--resume", "--lr", "0.5"])
    assert (tmp_path / "resumed" / "config.json").read_text() == config


class CtrlCAtCall:
    """Stands in for 07's train_steps: call number `at` is a Ctrl-C, the others train."""

    def __init__(self, train_steps, at):
        self.train_steps, self.at, self.calls = train_steps, at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.train_steps(*args)


def test_ctrl_c_says_what_was_saved(script, tmp_path, monkeypatch, capsys):
    """Before the first save step there is nothing to resume; after it, --resume continues from its step."""
    m = script(SCRIPT)
    real_train_steps = m.train_steps
    for at, note in [(1, "nothing was saved: start the same command again"), (2, "step 2 is saved in")]:
        monkeypatch.setattr(m, "train_steps", CtrlCAtCall(real_train_steps, at))
        with pytest.raises(SystemExit) as stop:
            m.main(["--dry-run", "--out-dir", str(tmp_path / f"out{at}"), "--device", "cpu"])
        assert stop.value.code == 130 and note in capsys.readouterr().err


def test_bad_flags_are_errors(script, tmp_path):
    m = script(SCRIPT)
    with pytest.raises(SystemExit):
        m.parse_args(["--image-size", "36"])          # not divisible by 2^3
    with pytest.raises(SystemExit):
        m.parse_args(["--data-class", "horse"])
    with pytest.raises(SystemExit, match="^error: no AFHQ folder"):
        m.main(["--data-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "out")] + TINY)


def test_fid_reference_uses_clean_fids_resize_and_warns_of_a_small_sample(script, monkeypatch, capsys, tmp_path):
    """Handout E §7 computes its FID with clean-fid: 07's Inception features take clean-fid's resize. A stand-in
    network (2×2 average pooling of the resized images: 12 features) replaces the Inception weights."""
    import common.inception as inception
    m = script(SCRIPT)
    monkeypatch.setattr(inception, "load_fid_inception", lambda path, device: nn.Sequential(
        nn.AdaptiveAvgPool2d(2), nn.Flatten()))
    args = m.parse_args(["--dry-run"])
    x_train = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = m.fid_reference(x_train, args, torch.device("cpu"), tmp_path)
    assert ref[0].resize == "clean-fid"
    assert f"FID of {args.n_samples:,} samples (--n-samples) is strongly biased" in capsys.readouterr().out
    assert m.fid_of_samples(x_train, ref) < 1e-6 < m.fid_of_samples(x_train * 0.5, ref)
    # a rerun reads the training images' statistics from fid_train_stats.pt; other images are computed anew
    monkeypatch.setattr(inception.InceptionFeatures, "stats", lambda self, x: pytest.fail("recomputed"))
    again = m.fid_reference(x_train, args, torch.device("cpu"), tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again[1], ref[1]))
    monkeypatch.undo()
    monkeypatch.setattr(inception, "load_fid_inception", lambda path, device: nn.Sequential(
        nn.AdaptiveAvgPool2d(2), nn.Flatten()))
    other = m.fid_reference(x_train * 0.5, args, torch.device("cpu"), tmp_path)
    assert not torch.equal(other[1][0], ref[1][0])
