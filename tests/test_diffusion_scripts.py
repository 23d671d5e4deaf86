"""Smoke tests: 01 and 02 in --dry-run write every promised file, and bad input is a one-line error."""
import json
import shutil

import numpy as np
import pytest
import torch

from common.data import from_uint8, synthetic_dataset
from common.judge import get_judge
from conftest import ConditionalPointMass

ALWAYS = ["config.json", "losses.csv", "loss_curve.png", "checkpoint.pt", "metrics.json", "samples.npz",
          "samples_epoch_001.png", "samples_epoch_002.png"]


def _check_pngs(out):
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, png


def test_01_dry_run_writes_every_file(script, tmp_path):
    metrics = script("01_ddpm_mnist.py").main(["--dry-run", "--out-dir", str(tmp_path)])
    for name in ALWAYS + ["samples_final.png"]:
        assert (tmp_path / name).is_file(), name
    _check_pngs(tmp_path)
    images = np.load(tmp_path / "samples.npz")["images"]
    assert images.dtype == np.uint8 and images.shape == (16, 28, 28)
    assert len(np.unique(images.reshape(16, -1), axis=0)) == 16       # 16 different samples, not one blank
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved.pop("judge") == metrics.pop("judge")                  # which judge measured it (its id)
    histogram = saved.pop("judge_digit_histogram")                   # a list: compared exactly, not by approx
    assert histogram == metrics.pop("judge_digit_histogram")
    assert saved == pytest.approx(metrics)
    metrics["judge_digit_histogram"] = histogram
    assert sum(metrics["judge_digit_histogram"]) == 16 and metrics["fd_judge_vs_mnist_test"] >= 0
    # the FD-judge is that of the saved 8-bit images: samples.npz reproduces it
    judge, x_real = get_judge("mnist", dry_run=True), synthetic_dataset(256)[0]
    assert judge.fd(from_uint8(images), x_real) == pytest.approx(metrics["fd_judge_vs_mnist_test"], rel=1e-9)
    assert len((tmp_path / "losses.csv").read_text().splitlines()) == 1 + 2 * 4   # header + 2 epochs × 4 batches
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and {"model", "optimizer", "lr_scheduler", "args"} <= set(ckpt)
    # the README's DDIM recipe: a copy of the checkpoint resampled with DDIM says so in metrics.json
    assert metrics["sampler"] == "Algorithm 2"
    (tmp_path / "ddim").mkdir()
    shutil.copy(tmp_path / "checkpoint.pt", tmp_path / "ddim")
    ddim = script("01_ddpm_mnist.py").main(["--dry-run", "--out-dir", str(tmp_path / "ddim"), "--resume",
                                            "--sampler", "ddim", "--eta", "1"])
    assert ddim["sampler"] == "DDIM, 5 steps, η = 1"


@pytest.mark.parametrize("name", ["01_ddpm_mnist.py", "02_cfg_mnist.py"])
def test_config_json_changes_only_when_resume_is_accepted(script, tmp_path, name):
    main = script(name).main
    main(["--dry-run", "--epochs", "1", "--out-dir", str(tmp_path)])
    config = (tmp_path / "config.json").read_text()
    with pytest.raises(SystemExit, match="trained with --hidden 8, not 12"):       # rejected: the file is kept
        main(["--dry-run", "--epochs", "2", "--out-dir", str(tmp_path), "--resume", "--hidden", "12"])
    assert (tmp_path / "config.json").read_text() == config and json.loads(config)["hidden"] == 8
    main(["--dry-run", "--epochs", "2", "--out-dir", str(tmp_path), "--resume"])      # accepted: this run's settings
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("name", ["01_ddpm_mnist.py", "02_cfg_mnist.py"])
def test_resume_draws_the_grid_a_ctrl_c_cut_short_from_the_same_noise(script, tmp_path, name):
    # Ctrl-C while epoch 2's grid was drawn: its checkpoint is saved, its grid is not. --resume finds
    # every epoch trained, draws that grid first, and it is the same picture: x_T and every z are seeded
    argv = ["--dry-run", "--out-dir", str(tmp_path)] + (["--sweep", "5"] if name.startswith("02") else [])
    script(name).main(argv)
    grid = tmp_path / "samples_epoch_002.png"
    first, samples = grid.read_bytes(), np.load(tmp_path / "samples.npz")["images"]
    grid.unlink()
    torch.manual_seed(987)                              # another global random state must not matter
    script(name).main(argv + ["--resume"])
    assert grid.read_bytes() == first
    assert np.array_equal(np.load(tmp_path / "samples.npz")["images"], samples)


def test_02_sweep_puts_each_gamma_and_digit_where_it_belongs(script, tmp_path):
    # the dry-run model barely tells labels apart, so its sweep rows look alike; with the exact ε of a model
    # whose digit-d images all equal targets[d] (and unconditional ones u), Algorithm 4 at γ must land on
    # u + γ(targets[d] − u): every (γ, digit) row of the sweep is checked against its own point
    m = script("02_cfg_mnist.py")
    args = m.parse_args(["--dry-run", "--sweep", "0", "1", "2.5", "--digits", "0", "3", "9", "--eval-per-class", "2"])
    sched = m.ddpm_schedule(args.T, args.beta_1, args.beta_T)
    targets = torch.linspace(-0.3, 0.3, 10).reshape(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous()
    u = torch.full((1, 1, 28, 28), 0.05)
    samples, y, w = m.guidance_sweep(args, ConditionalPointMass(targets, u, sched), sched, torch.device("cpu"),
                                     tmp_path)
    assert w.tolist() == [g for g in (0, 1, 2.5) for _ in range(6)] and y.tolist() == [0, 0, 3, 3, 9, 9] * 3
    expected = u + w.reshape(-1, 1, 1, 1) * (targets[y] - u)
    torch.testing.assert_close(samples, expected, atol=1e-3, rtol=0)    # the points lie ≥ 0.025 apart


@pytest.fixture(scope="module")
def dry_run_02(tmp_path_factory):
    """One 02 --dry-run shared by the tests below (it is the slowest smoke run)."""
    from conftest import load_script
    out = tmp_path_factory.mktemp("02")
    return out, load_script("02_cfg_mnist.py").main(["--dry-run", "--out-dir", str(out)])


def test_02_dry_run_writes_every_file(dry_run_02):
    tmp_path, metrics = dry_run_02
    for name in ALWAYS + ["guidance_sweep.png", "guidance_metrics.png"]:
        assert (tmp_path / name).is_file(), name
    _check_pngs(tmp_path)
    npz = np.load(tmp_path / "samples.npz")
    n = 6 * 10 * 2   # γ values × digits × --eval-per-class
    assert npz["images"].shape == (n, 28, 28) and npz["images"].dtype == np.uint8
    for w in (0, 15):   # within a γ every sample is its own (across γ they share x_T, and may coincide here)
        drawn = npz["images"][npz["guidance"] == w]
        assert len(np.unique(drawn.reshape(len(drawn), -1), axis=0)) == len(drawn) == 20
    assert sorted(set(npz["guidance"].tolist())) == [0, 1, 5, 7, 10, 15]
    assert np.bincount(npz["labels"]).tolist() == [12] * 10
    rows = metrics["per_guidance"]
    assert metrics["sampler"] == "Algorithm 4"
    assert [r["guidance"] for r in rows] == [0, 1, 5, 7, 10, 15]
    assert all(0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["n"] == 20 for r in rows)


class InterruptedAtTheThirdGamma:
    """Stands in for 02's draw_samples: records the γ of each sweep call and Ctrl-C's the third, the real
    draw_samples otherwise."""

    def __init__(self, draw):
        self.draw, self.sweep_calls = draw, []

    def __call__(self, *a, **k):
        if len(a[3]) == 10 * 2:                     # a sweep call: 10 digits × 2 (the epoch grids draw 8)
            self.sweep_calls.append(a[5][0].item())
            if len(self.sweep_calls) == 3:
                raise KeyboardInterrupt
        return self.draw(*a, **k)


def test_02_interrupted_sweep_resumes_at_the_gamma_it_was_drawing(script, tmp_path, capsys):
    """Ctrl-C while γ = 5 is drawn keeps γ = 0 and 1 (sweep_parts/); --resume draws only the rest, and
    samples.npz equals a sweep drawn whole from the same checkpoint (every γ has its own z generator)."""
    m = script("02_cfg_mnist.py")
    m.draw_samples = interrupted = InterruptedAtTheThirdGamma(m.draw_samples)
    argv = ["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        m.main(argv)
    parts = tmp_path / "sweep_parts"
    assert interrupted.sweep_calls == [0, 1, 5]
    assert sorted(p.name for p in parts.iterdir()) == ["gamma_0.pt", "gamma_1.pt"]
    capsys.readouterr()
    script("02_cfg_mnist.py").main(argv + ["--resume"])
    printed = capsys.readouterr().out
    assert f"reusing {parts / 'gamma_0.pt'}" in printed and f"reusing {parts / 'gamma_1.pt'}" in printed
    assert "gamma_5.pt" not in printed and "making it again" not in printed
    assert len(list(parts.iterdir())) == 6
    resumed = np.load(tmp_path / "samples.npz")["images"]
    for part in parts.iterdir():                  # the same checkpoint, the whole sweep drawn afresh
        part.unlink()
    script("02_cfg_mnist.py").main(argv + ["--resume"])
    assert "reusing" not in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "samples.npz")["images"], resumed)


def test_02_resume_continues_from_the_checkpoint(script, dry_run_02, capsys):
    out = dry_run_02[0]
    before = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    script("02_cfg_mnist.py").main(["--dry-run", "--out-dir", str(out), "--resume"])   # at the last epoch already
    assert "all 2 epochs already trained" in capsys.readouterr().out   # nothing left to train ...
    after = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)   # ... and nothing retrained


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-3"], "--epochs"),
    (["--digits", "12"], "--digits"),
    (["--p-uncond", "1.5"], "--p-uncond"),
    (["--beta-1", "0.5", "--beta-T", "0.1"], "--beta-1"),
    (["--sampler", "ddim", "--eta", "-1"], "--eta"),
])
def test_02_bad_arguments_are_one_line_errors(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script("02_cfg_mnist.py").parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]   # the error line


def _offline(*args, **kwargs):
    """Stands in for torchvision's MNIST.download with no network."""
    raise OSError("no network")


def test_missing_dataset_is_a_one_line_error(script, tmp_path, monkeypatch):
    from torchvision import datasets
    monkeypatch.setattr(datasets.MNIST, "download", _offline)
    with pytest.raises(SystemExit, match=r"put the four files .* in .*MNIST/raw"):
        script("01_ddpm_mnist.py").main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path)])


def test_corrupt_checkpoint_with_resume_is_a_one_line_error(script, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit, match="corrupt"):
        script("01_ddpm_mnist.py").main(["--dry-run", "--out-dir", str(tmp_path), "--resume"])


def test_presets_are_defaults_that_explicit_flags_override(script):
    parse = script("02_cfg_mnist.py").parse_args
    quick = parse(["--quick"])
    assert (quick.hidden, quick.T) == (24, 100)                        # the preset applies ...
    assert parse(["--quick", "--epochs", "5"]).epochs == 5             # ... unless a flag says otherwise
    with pytest.raises(SystemExit):
        parse(["--quick", "--dry-run"])                                # two presets: one-line error
    assert parse([]).hidden == 64 and parse([]).epochs == 20          # no preset: the handout's values

