"""01 and 02 end to end on synthetic data: every promised output, --resume continuing exactly, the sweep
continuing at the γ it was drawing, each (γ, digit) of the sweep where it belongs, and non-finite samples
refused."""
import json

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from common.data import from_uint8, synthetic_mnist
from common.judge import get_judge
from conftest import ConditionalPointMass, load_script

ALWAYS = ["config.json", "losses.csv", "loss_curve.png", "checkpoint.pt", "samples.npz", "metrics.json",
          "samples_epoch_001.png", "samples_epoch_002.png"]


def check_pngs(folder):
    for png in folder.glob("*.png"):
        image = mpimg.imread(png)
        assert image.ndim == 3 and min(image.shape[:2]) > 50 and image.std() > 0.01, png   # a picture, not blank


def test_01_dry_run_writes_every_file(tmp_path):
    metrics = load_script("01_ddpm_mnist.py").main(["--dry-run", "--out-dir", str(tmp_path)])
    for name in ALWAYS + ["samples_final.png"]:
        assert (tmp_path / name).is_file(), name
    check_pngs(tmp_path)
    images = np.load(tmp_path / "samples.npz")["images"]
    assert images.dtype == np.uint8 and images.shape == (16, 28, 28)
    assert len(np.unique(images.reshape(16, -1), axis=0)) == 16       # 16 different samples, not one blank
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["judge_digit_histogram"] == metrics["judge_digit_histogram"]
    assert sum(metrics["judge_digit_histogram"]) == 16 and metrics["sampler"] == "Algorithm 2"
    assert saved["fd_judge_vs_mnist_test"] == pytest.approx(metrics["fd_judge_vs_mnist_test"], rel=1e-12)
    # the FD-judge is that of the saved 8-bit images: samples.npz reproduces it
    judge = get_judge("mnist", "data", torch.device("cpu"), dry_run=True)
    x_test = synthetic_mnist(128, seed=1)[0]
    assert judge.fd(from_uint8(images), x_test) == pytest.approx(metrics["fd_judge_vs_mnist_test"], rel=1e-9)
    assert len((tmp_path / "losses.csv").read_text().splitlines()) == 1 + 2 * 4   # header + 2 epochs × 4 batches
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and {"model", "optimizer", "scaler", "history", "args"} <= set(ckpt)
    assert json.loads((tmp_path / "config.json").read_text())["script"] == "01_ddpm_mnist"


def test_01_resume_after_one_epoch_equals_two_straight_epochs_and_ddim_says_so(tmp_path, capsys):
    main = load_script("01_ddpm_mnist.py").main
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["--dry-run", "--out-dir", str(straight)])
    main(["--dry-run", "--out-dir", str(split), "--epochs", "1"])
    torch.manual_seed(987)                                   # another global random state must not matter
    main(["--dry-run", "--out-dir", str(split), "--epochs", "2", "--resume"])
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (straight, split))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"]["batch"] == b["history"]["batch"]
    assert (straight / "losses.csv").read_bytes() == (split / "losses.csv").read_bytes()
    assert np.array_equal(*(np.load(d / "samples.npz")["images"] for d in (straight, split)))
    # --resume with every epoch trained redraws the samples, here with DDIM, and says so
    capsys.readouterr()
    ddim = main(["--dry-run", "--out-dir", str(split), "--resume", "--sampler", "ddim", "--eta", "0"])
    assert ddim["sampler"] == "DDIM, 5 steps, η = 0"
    assert capsys.readouterr().out.splitlines()[0].endswith("images on cpu, all 2 epochs trained")   # not "3..2"


@pytest.fixture(scope="module")
def dry_run_02(tmp_path_factory):
    """One 02 --dry-run shared by the tests below (it is the slowest smoke run)."""
    out = tmp_path_factory.mktemp("02")
    return out, load_script("02_cfg_mnist.py").main(["--dry-run", "--out-dir", str(out)])


def test_02_dry_run_writes_every_file(dry_run_02):
    out, metrics = dry_run_02
    for name in ALWAYS + ["guidance_sweep.png", "guidance_metrics.png"]:
        assert (out / name).is_file(), name
    check_pngs(out)
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (6 * 10 * 2, 28, 28) and npz["images"].dtype == np.uint8   # γ × digits × 2
    assert sorted(set(npz["guidance"].tolist())) == [0, 1, 5, 7, 10, 15]
    assert np.bincount(npz["labels"]).tolist() == [12] * 10
    for w in (0, 15):   # within a γ every sample is its own
        drawn = npz["images"][npz["guidance"] == w]
        assert len(np.unique(drawn.reshape(len(drawn), -1), axis=0)) == len(drawn) == 20
    rows = metrics["per_guidance"]
    assert metrics["sampler"] == "Algorithm 4" and [r["guidance"] for r in rows] == [0, 1, 5, 7, 10, 15]
    assert all(0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["n"] == 20 for r in rows)
    assert json.loads((out / "metrics.json").read_text())["per_guidance"] == rows
    assert sorted(p.name for p in (out / "sweep").iterdir()) == sorted(f"gamma_{g}.npz" for g in (0, 1, 5, 7, 10, 15))


def test_02_sweep_puts_each_gamma_and_digit_where_it_belongs(tmp_path):
    # with the exact ε of a model whose digit-d images all equal targets[d] (and unconditional ones u),
    # Algorithm 4 at γ must land on u + γ(targets[d] − u): every (γ, digit) of the sweep is checked
    m = load_script("02_cfg_mnist.py")
    args = m.parse_args(["--dry-run", "--sweep", "0", "1", "2.5", "--digits", "0", "3", "9", "--per-class", "2"])
    args.sample_batch = 64
    sched = m.ddpm_schedule(args.T, args.beta_1, args.beta_T)
    targets = torch.linspace(-0.3, 0.3, 10).reshape(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous()
    u = torch.full((1, 1, 28, 28), 0.05)
    images = m.guidance_sweep(args, ConditionalPointMass(targets, u, sched), sched, 2, torch.device("cpu"), tmp_path)
    assert images.shape == (3, 3, 2, 28, 28)
    for i, g in enumerate((0, 1, 2.5)):
        for j, d in enumerate((0, 3, 9)):
            expected = ((u + g * (targets[d] - u)).clamp(-1, 1) + 1) * 127.5
            assert np.abs(images[i, j].astype(float) - expected.numpy()[0]).max() <= 1, (g, d)


class SweepSpy:
    """Wraps 02's draw_samples: records each sweep γ it is asked for, and raises Ctrl-C at the n-th one."""

    def __init__(self, draw, stop_at=None):
        self.draw, self.stop_at, self.sweep = draw, stop_at, []

    def __call__(self, model, sched, x_T, seed, args, c, gamma):
        if len(c) == len(args.digits) * args.per_class:      # a sweep γ, not an epoch grid
            self.sweep.append(gamma)
            if len(self.sweep) == self.stop_at:
                raise KeyboardInterrupt
        return self.draw(model, sched, x_T, seed, args, c, gamma)


def test_02_an_interrupted_sweep_continues_at_the_gamma_it_was_drawing(dry_run_02, tmp_path, monkeypatch):
    m = load_script("02_cfg_mnist.py")
    argv = ["--dry-run", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(m, "draw_samples", SweepSpy(m.draw_samples, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        m.main(argv)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["gamma_0.npz", "gamma_1.npz"]
    spy = SweepSpy(m.draw_samples.draw)
    monkeypatch.setattr(m, "draw_samples", spy)
    m.main(argv + ["--resume"])
    assert spy.sweep == [5, 7, 10, 15]                       # γ = 0 and 1 reused, the rest drawn
    out = dry_run_02[0]                                     # and the result is a straight run's, bit for bit
    assert np.array_equal(np.load(tmp_path / "samples.npz")["images"], np.load(out / "samples.npz")["images"])


def nan_at_gamma_3(model, sched, x_T, seed, args, c, gamma):
    return torch.full_like(x_T, float("nan") if gamma == 3 else 0.0)


def test_02_samples_that_are_not_finite_stop_the_run_naming_gamma(tmp_path, monkeypatch):
    m = load_script("02_cfg_mnist.py")
    monkeypatch.setattr(m, "draw_samples", nan_at_gamma_3)
    with pytest.raises(SystemExit) as e:
        m.main(["--dry-run", "--out-dir", str(tmp_path), "--epochs", "1", "--sample-epochs", "1", "--sweep", "3"])
    assert "γ = 3" in str(e.value) and "NaN" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "samples.npz").exists() and not (tmp_path / "sweep" / "gamma_3.npz").exists()


def test_02_resume_after_one_epoch_equals_two_straight_epochs(dry_run_02, tmp_path):
    main = load_script("02_cfg_mnist.py").main
    main(["--dry-run", "--out-dir", str(tmp_path), "--epochs", "1"])
    main(["--dry-run", "--out-dir", str(tmp_path), "--epochs", "2", "--resume"])
    straight = torch.load(dry_run_02[0] / "checkpoint.pt", weights_only=True)
    split = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], split["model"][k]), k
    assert np.array_equal(np.load(tmp_path / "samples.npz")["images"], np.load(dry_run_02[0] / "samples.npz")["images"])
