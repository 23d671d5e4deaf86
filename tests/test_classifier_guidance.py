"""Classifier guidance (Handout A 2, 03_classifier_guidance.py): the guided sampler against Algorithm 2, a linear
classifier's closed-form gradient and a point-mass denoiser; p_φ's loss; the frozen DDPM; the script end to end
on --dry-run, its --resume, and its one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import to_uint8
from common.run import read_checkpoint, save_checkpoint
from common.samplers import classifier_guided_sample, ddpm_sample, fixed_noise
from common.schedules import ddpm_schedule, schedule_from_beta
from common.unets import ConditionalDenoisingUNet, DenoisingUNet
from conftest import ROOT, PointMassDenoiser, load_script

CPU = torch.device("cpu")
SCALES = [0, 5]
OUTPUTS = ["config.json", "checkpoint_classifier.pt", "losses.csv", "loss_curve.png", "classifier_accuracy_vs_t.png",
           "guidance_sweep.png", "accuracy_vs_scale.png", "diversity_vs_scale.png", "samples.npz", "metrics.json",
           "guidance_table.md"] + [f"samples_s{s}.png" for s in SCALES] + [f"sweep/s_{s}.npz" for s in SCALES]


class LinearGuide(nn.Module):
    """log p(y | x) = log_softmax(W x + b)[y], whose gradient is W[y] − Σ_k p_k W[k] in closed form."""

    def __init__(self, dim, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W, self.b = nn.Parameter(torch.randn(10, dim, generator=g)), nn.Parameter(torch.randn(10, generator=g))

    def logits(self, x):
        return x.flatten(1) @ self.W.T + self.b                     # (B, 10)

    def log_prob(self, xt, t_frac, y):
        return F.log_softmax(self.logits(xt), dim=1).gather(1, y.reshape(-1, 1)).squeeze(1)

    def closed_form_grad(self, x, y):
        return (self.W[y] - F.softmax(self.logits(x), dim=1) @ self.W).reshape(x.shape)


class HalfDenoiser(nn.Module):
    """A stand-in ε-predictor, ε̂ = x_t / 2 (the shift does not depend on which one)."""

    def forward(self, xt, t_frac):
        return 0.5 * xt


@pytest.fixture(scope="module")
def cg():
    return load_script("03_classifier_guidance.py")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, cg):
    """01's --dry-run checkpoint (made in this process), then 03 --dry-run guiding it, with a stand-in for 02's
    samples.npz (γ = 0 and 5, 3 samples of each digit)."""
    root = tmp_path_factory.mktemp("guidance")
    load_script("01_ddpm_mnist.py").main(["--dry-run", "--epochs", "1", "--out-dir", str(root / "ddpm")])
    images = np.random.default_rng(0).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    np.savez(root / "cfg.npz", images=images, labels=np.tile(np.repeat(np.arange(10), 3), 2),
             guidance=np.repeat([0.0, 5.0], 30))
    argv = ["--dry-run", "--unet-checkpoint", str(root / "ddpm" / "checkpoint.pt"), "--out-dir", str(root / "out"),
            "--cfg-samples", str(root / "cfg.npz"), "--scales", "0", "5", "--device", "cpu"]
    return argv, root, cg.main(argv)


# --- the guided sampler (Handout A 2(c)) ---

def test_s_zero_is_bit_identical_to_algorithm_2(cg):
    torch.manual_seed(0)
    sched, model, guide = ddpm_schedule(6), DenoisingUNet(hidden=4), cg.NoisyClassifier(hidden=4).eval()
    x_T, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])
    unguided = ddpm_sample(model, x_T, sched, generator=torch.Generator().manual_seed(1))
    guided = [classifier_guided_sample(model, guide, x_T, y, s, sched, generator=torch.Generator().manual_seed(1))
              for s in (0.0, 5.0)]
    assert torch.equal(guided[0], unguided) and not torch.equal(guided[1], unguided)


@pytest.mark.parametrize("variance_scaled", [True, False])
def test_one_step_shifts_the_mean_by_s_sigma2_grad_log_p(variance_scaled):
    sched = schedule_from_beta(torch.tensor([0.25]))              # T = 1: one step, with z = 0
    guide, x_T, y = LinearGuide(16).eval(), torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    base = classifier_guided_sample(HalfDenoiser(), guide, x_T, y, 0.0, sched)
    for s in (1.0, 4.0):
        shift = classifier_guided_sample(HalfDenoiser(), guide, x_T, y, s, sched, variance_scaled) - base
        step = s * 0.25 if variance_scaled else s                 # Σ_1 = σ_1² = β_1 (Handout A 2(c))
        assert torch.allclose(shift, step * guide.closed_form_grad(x_T, y), atol=1e-6, rtol=1e-5), s


def test_larger_s_moves_a_point_mass_towards_the_guides_class():
    sched = ddpm_schedule(10, 0.05, 0.3)
    target, guide = torch.zeros(1, 4, 4), LinearGuide(16, seed=3).eval()
    x_T, y = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.full((64,), 6)
    p_target = []
    for s in (0.0, 1.0, 5.0, 20.0):
        x0 = classifier_guided_sample(PointMassDenoiser(target, sched), guide, x_T, y, s, sched,
                                      generator=torch.Generator().manual_seed(1))
        if s == 0:                                                  # unguided, every sample is the point mass
            assert torch.allclose(x0, target.expand_as(x0), atol=1e-5)
        p_target.append(guide.log_prob(x0, None, y).exp().mean().item())
    assert all(a < b for a, b in zip(p_target, p_target[1:])) and p_target[-1] > 4 * p_target[0], p_target


def test_the_frozen_unet_is_bit_identical_after_guided_sampling(cg, dry_run):
    argv, root, _ = dry_run
    unet, sched, _ = cg.load_frozen_unet(cg.parse_args(argv), CPU)
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    guide = cg.NoisyClassifier(hidden=4).eval()
    classifier_guided_sample(unet, guide, torch.randn(4, 1, 28, 28), torch.arange(4), 10.0, sched)
    saved = read_checkpoint(root / "ddpm" / "checkpoint.pt")["model"]
    assert saved.keys() == unet.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in unet.state_dict().items())


# --- p_φ (Handout A 2(b)) ---

def test_p_phi_loss_is_the_cross_entropy_at_t_over_T(cg):
    torch.manual_seed(0)
    clf = cg.NoisyClassifier(hidden=4).eval()
    xt, y, t = torch.randn(6, 1, 28, 28), torch.tensor([3, 1, 4, 1, 5, 9]), torch.tensor([1, 50, 100, 150, 250, 300])
    loss = clf.loss(xt, t, 300, y)
    assert torch.allclose(loss, F.cross_entropy(clf(xt, t / 300), y))
    assert torch.allclose(loss, -clf.log_prob(xt, t / 300, y).mean())          # what guidance differentiates
    assert not torch.allclose(loss, F.cross_entropy(clf(xt, t.float()), y))   # the time input matters


# --- 03_classifier_guidance.py end to end ---

def test_dry_run_writes_every_output(cg, dry_run):
    argv, root, metrics = dry_run
    out = root / "out"
    assert [name for name in OUTPUTS if not (out / name).is_file()] == []
    samples = np.load(out / "samples.npz")
    assert samples["images"].dtype == np.uint8 and samples["images"].shape == (2 * 10 * 3, 28, 28)
    assert samples["labels"].tolist() == np.tile(np.repeat(np.arange(10), 3), 2).tolist()
    assert samples["scale"].tolist() == np.repeat(SCALES, 30).tolist()
    # every s from the same x_T (seed 1) and z's (seed 2), guided by the saved p_φ: drawn here again
    unet, sched, _ = cg.load_frozen_unet(cg.parse_args(argv), CPU)
    clf = cg.NoisyClassifier(hidden=8)
    clf.load_state_dict(read_checkpoint(out / "checkpoint_classifier.pt")["model"])
    x_T, y = fixed_noise(30, 1, CPU), torch.arange(10).repeat_interleave(3)
    for i, s in enumerate(SCALES):
        x0 = classifier_guided_sample(unet, clf.eval(), x_T, y, s, sched, generator=torch.Generator().manual_seed(2))
        assert np.array_equal(samples["images"][30 * i:30 * (i + 1)], to_uint8(x0)), s
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["frozen_unet"] == {"bit_identical": True, "requires_grad": False}
    assert saved["unet"]["path"] == argv[2] and saved["unet"]["T"] == 10 and saved["classifier"]["epochs"] == 3
    assert [r["t"] for r in saved["classifier"]["accuracy_by_t"]] == list(range(1, 11))
    assert [r["s"] for r in saved["per_scale"]] == SCALES
    assert [r["guidance"] for r in saved["cfg_comparison"]["per_guidance"]] == [0, 5]
    for r in saved["per_scale"] + saved["cfg_comparison"]["per_guidance"]:
        assert 0 <= r["judge_accuracy"] <= 1 and len(r["fd_judge_per_digit"]) == len(r["diversity_per_digit"]) == 10
        assert r["fd_judge_per_digit_mean"] == pytest.approx(np.mean(r["fd_judge_per_digit"]))
        assert r["diversity_per_digit_mean"] > 0 and r["n"] == 30
    assert all(0 <= r["p_phi_accuracy_t1"] <= 1 for r in saved["per_scale"])
    assert saved["real_test_images"]["judge_accuracy"] > 0.5 and saved["real_test_images"]["fd_judge_floor"] >= 0
    table = (out / "guidance_table.md").read_text()
    assert all(f"| s = {s} |" in table for s in SCALES) and "| CFG γ = 5 |" in table
    config, ckpt = json.loads((out / "config.json").read_text()), read_checkpoint(out / "checkpoint_classifier.pt")
    assert (config["T"], config["beta_1"], config["beta_T"]) == (10, 1e-4, 0.02)   # the DDPM's own schedule
    assert ckpt["epoch"] == 3 and ckpt["bound"] == "classifier_epochs" and len(ckpt["history"]["batch"][0]) == 8
    assert ckpt["history"]["epoch"][-1] < ckpt["history"]["epoch"][0]           # p_φ's cross-entropy fell
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + 3 * 8


def test_resume_reuses_p_phi_and_draws_only_what_the_sweep_lacks(cg, dry_run, monkeypatch, capsys):
    argv, root, first = dry_run
    out = root / "out"
    checkpoint, images = (out / "checkpoint_classifier.pt").read_bytes(), np.load(out / "samples.npz")["images"]
    (out / "sweep" / "s_5.npz").unlink()                           # as if stopped while drawing s = 5
    drawn, sampler = [], cg.classifier_guided_sample
    monkeypatch.setattr(cg, "classifier_guided_sample", lambda *a, **k: drawn.append(a[4]) or sampler(*a, **k))
    again = cg.main(argv + ["--resume"])
    assert set(drawn) == {5.0} and "p_φ epoch" not in capsys.readouterr().out
    assert (out / "checkpoint_classifier.pt").read_bytes() == checkpoint
    assert np.array_equal(np.load(out / "samples.npz")["images"], images)
    assert again["per_scale"] == first["per_scale"]


# --- one-line errors ---

def test_a_missing_ddpm_names_01s_command_or_runs_it(cg, tmp_path, monkeypatch):
    path = tmp_path / "ddpm" / "checkpoint.pt"
    with pytest.raises(SystemExit) as stop:
        cg.main(["--unet-checkpoint", str(path), "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert str(stop.value) == (f"error: {path} does not exist: run `python 01_ddpm_mnist.py --out-dir {path.parent}` "
                               f"first, or add --train-unet")
    assert not (tmp_path / "out").exists()
    ran = []                                                       # --dry-run runs it (here: a failing stand-in)
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: ran.append(argv) or subprocess.CompletedProcess(argv, 3))
    with pytest.raises(SystemExit, match=r"stopped \(exit status 3\) before its DDPM was done: see its error above"):
        cg.main(["--dry-run", "--unet-checkpoint", str(path), "--device", "cpu", "--data-dir", "d"])
    assert ran == [[sys.executable, str(ROOT / "01_ddpm_mnist.py"), "--dry-run", "--out-dir", str(path.parent),
                    "--device", "cpu", "--data-dir", "d"]]


def unfinished_ddpm(path):
    """01's checkpoint after 1 of its 2 epochs, as a run that 03 started and Ctrl-C stopped leaves it."""
    settings = {"script": "01_ddpm_mnist", "hidden": 4, "T": 5, "beta_1": 1e-3, "beta_T": 0.1, "epochs": 2}
    save_checkpoint(path, settings, model=DenoisingUNet(hidden=4), epoch=1, history={"epoch": [1.0]})


def test_ctrl_c_while_01_trains_for_this_run_says_one_thing_and_the_same_command_finishes_01(cg, tmp_path,
                                                                                          monkeypatch, capsys):
    path = tmp_path / "ddpm" / "checkpoint.pt"
    argv = ["--dry-run", "--unet-checkpoint", str(path), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]

    def interrupted(argv, **kwargs):                               # 01 saves epoch 1 of 2, then Ctrl-C stops it
        path.parent.mkdir()
        unfinished_ddpm(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        cg.main(argv)
    assert stop.value.code == 130 and capsys.readouterr().err.strip().splitlines() == [
        "interrupted while 01_ddpm_mnist.py trained the DDPM of this run (nothing of this run was written): run the "
        "same command again; it continues that training first"]
    assert not (tmp_path / "out").exists()
    ran = []                                                       # the same command: 01 --resume, not guiding it
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: ran.append(argv) or subprocess.CompletedProcess(argv, 1))
    with pytest.raises(SystemExit, match=r"stopped \(exit status 1\)"):
        cg.main(argv)
    assert ran[0][-5:] == ["--resume", "--device", "cpu", "--data-dir", "data"]


def test_a_checkpoint_that_is_not_01s_is_refused(cg, tmp_path, capsys):
    schedule = {"T": 5, "beta_1": 1e-3, "beta_T": 0.1, "epochs": 3, "quick": False}
    for script, model, says in [("02_cfg_mnist", ConditionalDenoisingUNet(hidden=4), "written by 02_cfg_mnist, not"),
                                ("01_ddpm_mnist", DenoisingUNet(hidden=8), "weights do not fit")]:
        save_checkpoint(tmp_path / "checkpoint.pt", dict(schedule, script=script, hidden=4), model=model, epoch=1,
                        history={"epoch": [1.0]})
        with pytest.raises(SystemExit, match=says):
            cg.load_frozen_unet(cg.parse_args(["--unet-checkpoint", str(tmp_path / "checkpoint.pt")]), CPU)
    save_checkpoint(tmp_path / "checkpoint.pt", dict(schedule, script="01_ddpm_mnist", hidden=4),
                    model=DenoisingUNet(hidden=4), epoch=1, history={"epoch": [1.0]})
    info = cg.load_frozen_unet(cg.parse_args(["--unet-checkpoint", str(tmp_path / "checkpoint.pt")]), CPU)[2]
    assert info["epochs_trained"] == 1 and "holds 1 of its 3 epochs" in capsys.readouterr().out   # used as it is


def test_bad_cfg_samples_and_repeated_scales_are_usage_errors(cg, tmp_path, capsys):
    good = {"images": np.zeros((20, 28, 28), np.uint8), "labels": np.arange(20) % 10, "guidance": np.zeros(20)}
    np.savez(tmp_path / "good.npz", **good)
    assert cg.parse_args(["--cfg-samples", str(tmp_path / "good.npz")]).cfg_samples == str(tmp_path / "good.npz")
    np.savez(tmp_path / "ddpm.npz", images=good["images"])                     # 01's samples.npz: no labels
    np.savez(tmp_path / "short.npz", **dict(good, labels=np.arange(20) % 11))  # one sample of digit 9
    for name, says in (("missing.npz", "does not exist"), ("ddpm.npz", "is not 02_cfg_mnist.py's"),
                       ("short.npz", "is not 02_cfg_mnist.py's")):
        with pytest.raises(SystemExit) as stop:
            cg.parse_args(["--cfg-samples", str(tmp_path / name)])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert stop.value.code == 2 and f"--cfg-samples {tmp_path / name} {says}" in line, line
    with pytest.raises(SystemExit) as stop:
        cg.parse_args(["--scales", "0", "5", "0"])
    assert stop.value.code == 2 and "--scales lists a value twice" in capsys.readouterr().err
