"""Dry runs of 04_dcgan_wgan.py and 05_cgan_wgangp_fid.py: every promised file, an exact --resume, the G steps in
the checkpoints' optimisers, and one-line errors."""
import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import load_script
from test_data import write_idx

M04, M05 = load_script("04_dcgan_wgan.py"), load_script("05_cgan_wgangp_fid.py")
RUNS04 = ("dcgan", "wgan", "wgan_clip0.1")   # the dry run's --clip-sweep 0.1 0.01: c = 0.01 is the main WGAN


def assert_png(path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 2000, path


def assert_npz(path, n, labels=False):
    with np.load(path) as saved:
        assert saved["images"].dtype == np.uint8 and saved["images"].shape == (n, 28, 28)
        assert saved["images"].max() > saved["images"].min()           # not a blank image set
        if labels:
            assert saved["labels"].tolist() == [k % 10 for k in range(n)]


def checkpoint(path):
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def run04(tmp_path_factory):
    out = tmp_path_factory.mktemp("04")
    return out, M04.main(["--dry-run", "--out-dir", str(out)])


def test_04_dry_run_writes_every_file(run04):
    out, metrics = run04
    for name in ["config.json", "losses.csv", "metrics.json"]:
        assert (out / name).stat().st_size > 0, name
    for name in RUNS04:
        for png in [f"loss_curve_{name}", f"samples_{name}_epoch_001", f"samples_{name}_epoch_002"]:
            assert_png(out / f"{png}.png")
        state = checkpoint(out / f"checkpoint_{name}.pt")
        assert {"G", "D", "opt_G", "opt_D", "scaler_G", "scaler_D", "history", "args"} <= set(state)
        assert state["epoch"] == 2
    for png in ["dcgan_vs_wgan", "clip_sweep", "clip_sweep_fd"]:
        assert_png(out / f"{png}.png")
    assert_npz(out / "samples_dcgan.npz", 64)
    assert_npz(out / "samples_wgan.npz", 64)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert set(metrics["models"]) == set(RUNS04)
    for m in metrics["models"].values():
        assert m["fd_judge"] >= 0 and m["fid"] == "n/a" and m["n"] == 64 and m["epochs_trained"] == 2
    assert [(r["clip"], r["fd_judge"]) for r in metrics["clip_sweep"]] == [
        (0.01, metrics["models"]["wgan"]["fd_judge"]), (0.1, metrics["models"]["wgan_clip0.1"]["fd_judge"])]


def test_04_lowest_g_loss_epoch_is_handout_bs_best_epoch(run04):
    out, metrics = run04
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert {r["model"] for r in rows} == set(RUNS04)
    for name in RUNS04:   # recomputed from losses.csv: the epoch of the lowest mean G loss
        g = {e: np.mean([float(r["g_loss"]) for r in rows if (r["model"], r["epoch"]) == (name, e) and r["g_loss"]])
             for e in ("1", "2")}
        assert metrics["models"][name]["lowest_g_loss_epoch"] == int(min(g, key=g.get))
    assert M04.lowest_g_loss_epoch({"g": [[1.0, 1.2], [0.5, 0.9], [0.8, 0.6]]}) == 2   # means 1.1, 0.7, 0.7
    assert M04.lowest_g_loss_epoch({"g": [[], []]}) is None


def test_04_steps_g_after_every_n_critic_critic_steps(run04):
    """The optimisers' step counts: 2 epochs of 4 batches; the DCGAN steps G every step, the WGAN (dry run: n_critic
    2) every 2nd; losses.csv has a G loss on exactly those rows."""
    out, _ = run04
    for name, g_steps in [("dcgan", 8), ("wgan", 4)]:
        state = checkpoint(out / f"checkpoint_{name}.pt")
        assert {int(s["step"]) for s in state["opt_D"]["state"].values()} == {8}
        assert {int(s["step"]) for s in state["opt_G"]["state"].values()} == {g_steps}
    wgan = [r for r in csv.DictReader(open(out / "losses.csv")) if r["model"] == "wgan"]
    assert [r["g_loss"] != "" for r in wgan] == [False, True] * 4


class StopRun(Exception):
    pass


class RecordingStep:
    """Wraps a script's critic step: records whether each call stepped G (a G loss came back), and stops the run
    at call `stop`."""

    def __init__(self, step, stop):
        self.step, self.g_steps, self.stop = step, [], stop

    def __call__(self, *args):
        d_loss, g_loss = self.step(*args)
        self.g_steps.append(g_loss is not None)
        if len(self.g_steps) == self.stop:
            raise StopRun
        return d_loss, g_loss


@pytest.mark.parametrize("script, step, argv", [(M04, "wgan_step", ["--models", "wgan"]), (M05, "wgangp_step", [])])
def test_g_steps_after_every_n_critic_th_critic_step(script, step, argv, tmp_path, monkeypatch):
    """Handout B 1(b): n_critic critic steps, then one G step. With n_critic 3 and 4 batches an epoch: the 3rd D step
    of each epoch (the count starts again each epoch)."""
    recording = RecordingStep(getattr(script, step), stop=8)
    monkeypatch.setattr(script, step, recording)
    with pytest.raises(StopRun):
        script.main(["--dry-run", "--n-critic", "3", "--out-dir", str(tmp_path)] + argv)
    assert recording.g_steps == [False, False, True, False] * 2


def test_04_resume_continues_exactly_and_starts_a_model_without_checkpoint_afresh(run04, tmp_path):
    """1 WGAN epoch, then --resume to 2 epochs with the DCGAN added (no checkpoint: trained from scratch) equals
    the straight 2-epoch run bit-exactly on the CPU."""
    argv = ["--dry-run", "--out-dir", str(tmp_path), "--clip-sweep", "0.01", "--n-samples", "2", "--n-grid", "1"]
    M04.main(argv + ["--models", "wgan", "--epochs", "1"])
    assert checkpoint(tmp_path / "checkpoint_wgan.pt")["epoch"] == 1
    M04.main(argv + ["--models", "dcgan", "wgan", "--resume"])
    for name in ["dcgan", "wgan"]:
        straight, resumed = (checkpoint(folder / f"checkpoint_{name}.pt") for folder in (run04[0], tmp_path))
        assert resumed["epoch"] == 2 and resumed["history"]["d"] == straight["history"]["d"]
        for part in ("G", "D"):
            for key, value in straight[part].items():
                assert torch.equal(value, resumed[part][key]), (name, part, key)
        for key, value in straight["opt_G"]["state"].items():
            assert all(torch.equal(v, resumed["opt_G"]["state"][key][k]) for k, v in value.items()), (name, key)


@pytest.mark.parametrize("flags, message", [
    (["--lr", "1e-3"], "trained with --lr None, not 0.001"),
    (["--hidden", "12"], "trained with --hidden 8, not 12"),
    (["--n-critic", "3"], "trained with --n-critic 2, not 3"),
    (["--epochs", "1"], "has trained 2 epochs, more than --epochs 1")])
def test_04_resume_with_other_settings_is_a_one_line_error(run04, flags, message):
    out = run04[0]
    config = (out / "config.json").read_text()
    with pytest.raises(SystemExit, match=rf"^error: [^\n]*{re.escape(message)}[^\n]*$"):
        M04.main(["--dry-run", "--out-dir", str(out), "--resume"] + flags)
    assert (out / "config.json").read_text() == config


@pytest.fixture(scope="module")
def run05(run04, tmp_path_factory):
    """05's dry run, its default --gan-dir (results/04_dcgan_wgan_dry_run) holding 04's DCGAN samples only."""
    root = tmp_path_factory.mktemp("05")
    gan_dir = root / "results" / "04_dcgan_wgan_dry_run"
    gan_dir.mkdir(parents=True)
    shutil.copy(run04[0] / "samples_dcgan.npz", gan_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return root / "out", M05.main(["--dry-run", "--out-dir", "out"])


def test_05_dry_run_reads_04s_samples_and_writes_every_file(run04, run05):
    """The DCGAN row is 04's, measured again; the WGAN row says to run 04 first."""
    out, metrics = run05
    for name in ["cgan", "wgangp"]:
        for png in [f"loss_curve_{name}", f"samples_{name}_epoch_001", f"samples_{name}_epoch_002"]:
            assert_png(out / f"{png}.png")
        assert checkpoint(out / f"checkpoint_{name}.pt")["epoch"] == 2
    for png in ["cgan_classes", "wgangp_samples", "cgan_class_diversity"]:
        assert_png(out / f"{png}.png")
    assert_npz(out / "samples_cgan.npz", 100, labels=True)
    assert_npz(out / "samples_wgangp.npz", 100)
    assert not list(out.glob("*dcgan*")) and not list(out.glob("*wgan.*"))          # 04's models are not trained
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics)) and list(saved["models"]) == ["dcgan", "wgan", "wgangp", "cgan"]
    assert saved["models"]["dcgan"]["source"] == "results/04_dcgan_wgan_dry_run/samples_dcgan.npz"
    assert saved["models"]["dcgan"]["fd_judge"] == pytest.approx(run04[1]["models"]["dcgan"]["fd_judge"], rel=1e-6)
    assert saved["models"]["wgan"]["fid"] == "run 04_dcgan_wgan.py first" and saved["models"]["wgan"]["n"] is None
    assert saved["models"]["wgangp"]["source"] == "trained here"
    assert 0 <= saved["models"]["cgan"]["judge_accuracy"] <= 1
    assert len(saved["cgan_per_class"]) == 10 and all(r["n"] == 10 for r in saved["cgan_per_class"])
    assert sum(r["dcgan_share_percent"] for r in saved["cgan_per_class"]) == pytest.approx(100)
    table = (out / "fid_table.md").read_text()
    for row in ["| DCGAN | 64 | n/a |", "| WGAN (clipping) | – | run 04_dcgan_wgan.py first | – | – |",
                "| WGAN-GP | 100 | n/a |", "| cGAN | 100 | n/a |", "| T-shirt/top |", "| Ankle boot |"]:
        assert row in table, row
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert [r["g_loss"] != "" for r in rows if r["model"] == "wgangp"] == [False, True] * 4   # n_critic 2


@pytest.mark.parametrize("model, other", [("cgan", "wgangp"), ("wgangp", "cgan")])
def test_05_models_trains_the_same_model_as_the_full_run_and_leaves_the_others_row_blank(run05, model, other,
                                                                                          tmp_path):
    metrics = M05.main(["--dry-run", "--models", model, "--out-dir", str(tmp_path)])
    with np.load(tmp_path / f"samples_{model}.npz") as alone, np.load(run05[0] / f"samples_{model}.npz") as full:
        assert np.array_equal(alone["images"], full["images"])       # the seeds do not depend on what else trains
    assert not list(tmp_path.glob(f"*{other}*"))
    assert metrics["models"][model]["fd_judge"] == pytest.approx(run05[1]["models"][model]["fd_judge"], rel=1e-6)
    assert metrics["models"][other]["fid"] == "not trained (--models)" and metrics["models"][other]["n"] is None
    table = (tmp_path / "fid_table.md").read_text()
    assert ("## cGAN: diversity within each class" in table) == (model == "cgan") == ("cgan_per_class" in metrics)


class ConstantJudge:
    """Stands in for the judge: every image is class 3; every distance 1, every spread 2."""

    def predict(self, x):
        return torch.full((len(x),), 3)

    def class_accuracy(self, x, y):
        return float(y == 3)

    def fd(self, x_a, x_b):
        return 1.0

    def diversity(self, x):
        return 2.0


def test_05_per_class_table_with_and_without_04s_dcgan():
    x, y = torch.zeros(20, 1, 28, 28), torch.arange(20) % 10
    rows = M05.class_diversity(ConstantJudge(), x, y, x, y, x_dcgan=torch.zeros(5, 1, 28, 28))
    assert [r["dcgan_share_percent"] for r in rows] == [0, 0, 0, 100, 0, 0, 0, 0, 0, 0]
    assert [r["dcgan_diversity"] for r in rows] == [None] * 3 + [2.0] + [None] * 6    # spread needs 2 samples
    assert [r["judge_accuracy"] for r in rows] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    rows = M05.class_diversity(ConstantJudge(), x, y, x, y, x_dcgan=None)       # 04 not run: the columns say –
    table = M05.fid_table({"reference": "test images", "real_test_judge_diversity": 2.0, "models": {},
                           "cgan_per_class": rows})
    assert "| Coat | 0.0% | 1.00 | 2.00 | 2.00 | 1.00 | – | – |" in table


def nan_images(n, device="cpu", seed=0):
    """Stands in for synthetic_mnist: images that make every loss NaN."""
    return torch.full((n, 1, 28, 28), float("nan"), device=device), torch.arange(n, device=device) % 10


def test_a_nan_loss_stops_with_one_line_and_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(M04, "synthetic_mnist", nan_images)
    with pytest.raises(SystemExit, match=r"^error: dcgan epoch 1: the D became nan at step 4; run the same command "
                                         r"again with a lower --lr \(no checkpoint was saved yet\)$"):
        M04.main(["--dry-run", "--models", "dcgan", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.glob("checkpoint*"))


def test_05_names_a_damaged_samples_file_of_04_before_it_trains(run04, tmp_path):
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "samples_dcgan.npz").write_bytes((run04[0] / "samples_dcgan.npz").read_bytes()[:300])
    with pytest.raises(SystemExit, match=r"^error: \S+samples_dcgan.npz is damaged or not 04_dcgan_wgan.py's samples "
                                         r"file \(BadZipFile\): run 04 with --resume and its other flags to write it "
                                         r"again, or move it away$"):
        M05.main(["--dry-run", "--gan-dir", str(tmp_path / "gan"), "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_fid_weights_that_cannot_be_read_stop_a_real_run_before_it_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = np.random.default_rng(0)
    write_idx(tmp_path / "data" / "FashionMNIST" / "raw", g.integers(0, 256, (64, 28, 28)), np.arange(64) % 10)
    (tmp_path / "weights.pth").write_bytes(b"half a file")
    for script in (M04, M05):
        with pytest.raises(SystemExit, match=r"^error: weights.pth is not a readable weights file"):
            script.main(["--epochs", "1", "--hidden", "8", "--batch-size", "8", "--n-samples", "20", "--out-dir",
                         "out", "--inception-weights", "weights.pth"])
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, argv, message", [
    (M04, ["--batch-size", "1000"], "--batch-size 1000 leaves 0 full batches of the 256 images"),
    (M05, ["--n-critic", "9"], "fewer than --n-critic 9: G would never be updated"),
    (M04, ["--inception-weights", "missing.pth"], "--inception-weights missing.pth: no such file"),
    (M05, ["--resume"], "--resume: there is no checkpoint in")])
def test_errors_before_training_are_one_line_and_write_nothing(script, argv, message, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=rf"^error: [^\n]*{re.escape(message)}[^\n]*$"):
        script.main(["--dry-run", "--out-dir", str(out)] + argv)
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("script, bad", [
    (M04, ["--epochs", "-3"]), (M04, ["--clip", "0"]), (M04, ["--clip", "5"]), (M04, ["--clip-sweep", "0.1", "-1"]),
    (M04, ["--hidden", "10"]), (M04, ["--dropout", "1"]), (M04, ["--models", "gan"]), (M04, ["--n-samples", "1"]),
    (M04, ["--clip-sweep", "0.1", "0.1"]), (M05, ["--batch-size", "0"]), (M05, ["--gp-lambda", "-10"]),
    (M05, ["--critic-norm", "batch"]), (M05, ["--label-inject", "pixels"]), (M05, ["--n-samples", "10"]),
    (M05, ["--quick", "--dry-run"])])
def test_bad_flags_are_one_line_usage_errors(script, bad, capsys):
    with pytest.raises(SystemExit) as stop:
        script.parse_args(bad)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert stop.value.code == 2 and len(errors) == 1 and (bad[0] in errors[0] or bad[0].strip("-") in errors[0])
