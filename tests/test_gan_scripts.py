"""Smoke runs of 04_dcgan_wgan.py and 05_cgan_wgangp_fid.py with --dry-run: every promised file, and sensible."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch

from common.gan_eval import FID_NA

PNG_MAGIC = b"\x89PNG"


def assert_png(path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:4] == PNG_MAGIC and len(data) > 2000, path


def assert_npz(path, n, labels=False):
    with np.load(path) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (n, 28, 28)
        assert f["images"].max() > f["images"].min()  # not a blank image set
        if labels:
            assert f["labels"].shape == (n,) and set(f["labels"].tolist()) == set(range(10))


@pytest.fixture(scope="module")
def run04(tmp_path_factory):
    from conftest import load_script
    out = tmp_path_factory.mktemp("04")
    metrics = load_script("04_dcgan_wgan.py").main(["--dry-run", "--out-dir", str(out)])
    return out, metrics


def test_04_dry_run_writes_every_file(run04):
    out, metrics = run04
    for name in ["config.json", "losses.csv", "metrics.json"]:
        assert (out / name).stat().st_size > 0, name
    for name in ["loss_curve_dcgan", "loss_curve_wgan", "samples_dcgan_epoch_001", "samples_dcgan_epoch_002",
                 "samples_wgan_epoch_002", "dcgan_vs_wgan", "clip_sweep", "clip_sweep_fd"]:
        assert_png(out / f"{name}.png")
    assert_npz(out / "samples_dcgan.npz", 64)
    assert_npz(out / "samples_wgan.npz", 64)
    rows = list(csv.DictReader((out / "losses.csv").open()))
    for name in ["dcgan", "wgan"]:   # Handout B's "best" epoch, recomputed from losses.csv
        g = {e: np.mean([float(r["g_loss"]) for r in rows if (r["model"], r["epoch"]) == (name, e) and r["g_loss"]])
             for e in ("1", "2")}
        assert metrics["models"][name]["lowest_g_loss_epoch"] == int(min(g, key=g.get))
    for name in ["dcgan", "wgan", "wgan_clip0.1"]:  # the sweep's c = 0.01 is the main WGAN
        state = torch.load(out / f"checkpoint_{name}.pt", weights_only=False)
        assert {"G", "D", "opt_G", "opt_D", "epoch", "history", "cfg"} <= set(state) and state["epoch"] == 2


@pytest.mark.parametrize("flags, message", [
    (["--width", "24"], "checkpoint_dcgan.pt was trained with --width 8, not 24; pass the same value"),
    (["--lr", "1e-3"], "checkpoint_dcgan.pt was trained with --lr 0.0002, not 0.001; pass the same value"),
    (["--n-critic", "3"], "checkpoint_wgan.pt was trained with --n-critic 2, not 3; pass the same value"),
    (["--batch-size", "1000"], "--batch-size 1000 is more than"),
    (["--epochs", "1"], "checkpoint_dcgan.pt has 2 trained epochs, more than --epochs 1; pass --epochs 2 or more")])
def test_04_a_rejected_resume_keeps_config_json(run04, flags, message):
    from conftest import load_script
    out = run04[0]
    config = (out / "config.json").read_text()
    with pytest.raises(SystemExit, match=message):
        load_script("04_dcgan_wgan.py").main(["--dry-run", "--out-dir", str(out), "--resume"] + flags)
    assert (out / "config.json").read_text() == config


def test_04_resume_with_the_same_flags_and_more_epochs(run04, tmp_path):
    from conftest import load_script
    out = tmp_path / "04"
    shutil.copytree(run04[0], out)
    metrics = load_script("04_dcgan_wgan.py").main(["--dry-run", "--out-dir", str(out), "--resume", "--epochs", "3"])
    for name in ["dcgan", "wgan", "wgan_clip0.1"]:
        state = torch.load(out / f"checkpoint_{name}.pt", weights_only=False)
        assert state["epoch"] == len(state["history"]["d"]) == metrics["models"][name]["epochs_trained"] == 3


def test_04_resume_with_the_same_epochs_trains_nothing(run04, tmp_path):
    from conftest import load_script
    out = tmp_path / "04"
    shutil.copytree(run04[0], out)
    checkpoint = (out / "checkpoint_dcgan.pt").read_bytes()
    metrics = load_script("04_dcgan_wgan.py").main(["--dry-run", "--out-dir", str(out), "--resume"])
    assert (out / "checkpoint_dcgan.pt").read_bytes() == checkpoint  # not trained, not rewritten
    assert metrics["models"]["dcgan"]["epochs_trained"] == 2
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("script, names", [("04_dcgan_wgan.py", "checkpoint_dcgan.pt, checkpoint_wgan.pt"),
                                           ("05_cgan_wgangp_fid.py", "checkpoint_wgangp.pt, checkpoint_cgan.pt")])
def test_resume_into_a_folder_without_checkpoints_is_refused(run04, tmp_path, script, names):
    """As 01, 02, 06 and 07: --resume with nothing to continue is one line, before training or config.json.
    05 counts only the models it trains itself: 04's DCGAN and WGAN in --gan-dir are reused, not resumed."""
    from conftest import load_script
    argv = ["--dry-run", "--out-dir", str(tmp_path), "--resume"]
    gan_dir = ["--gan-dir", str(run04[0])] if script.startswith("05") else []
    with pytest.raises(SystemExit, match=rf"--resume: no checkpoint in \S+ \({names}\b.*\(train first, or drop"):
        load_script(script).main(argv + gan_dir)
    assert list(tmp_path.iterdir()) == []


def test_05_resume_continues_its_own_models_and_still_reuses_04s(run04, tmp_path, capsys):
    from conftest import load_script
    main05, argv = load_script("05_cgan_wgangp_fid.py").main, ["--dry-run", "--gan-dir", str(run04[0]),
                                                                "--out-dir", str(tmp_path)]
    main05(argv + ["--epochs", "1"])
    main05(argv + ["--resume"])  # --epochs 2
    assert "reusing" in capsys.readouterr().out and not (tmp_path / "checkpoint_dcgan.pt").exists()
    for name in ["wgangp", "cgan"]:
        assert torch.load(tmp_path / f"checkpoint_{name}.pt", weights_only=False)["epoch"] == 2
    with pytest.raises(SystemExit, match="checkpoint_wgangp.pt has 2 trained epochs, more than --epochs 1"):
        main05(argv + ["--resume", "--epochs", "1"])


def test_04_ctrl_c_before_the_wgans_first_epoch_then_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the WGAN's first epoch, after the DCGAN finished: the line says --resume keeps the DCGAN, and
    --resume (accepted: one checkpoint is there) trains the WGAN from scratch."""
    from conftest import load_script
    from test_gan import InterruptAt
    import common.gan_train as gan_train
    argv = ["--dry-run", "--out-dir", str(tmp_path), "--clip-sweep", "0.01"]
    monkeypatch.setattr(gan_train, "train_one_epoch", InterruptAt(3))  # DCGAN: calls 1, 2; WGAN: 3
    with pytest.raises(SystemExit):
        load_script("04_dcgan_wgan.py").main(argv)
    assert capsys.readouterr().err.strip() == ("interrupted: no epoch of wgan finished, so nothing of it was saved; "
                                               "--resume keeps checkpoint_dcgan.pt and trains wgan from scratch")
    monkeypatch.undo()
    metrics = load_script("04_dcgan_wgan.py").main(argv + ["--resume"])
    assert "--resume: no" in capsys.readouterr().out and metrics["models"]["wgan"]["epochs_trained"] == 2


def test_a_missing_inception_weights_file_stops_before_training(tmp_path):
    from conftest import load_script
    for script in ["04_dcgan_wgan.py", "05_cgan_wgangp_fid.py"]:
        with pytest.raises(SystemExit, match=r"^error: --inception-weights \S+missing.pth: no such file [^\n]*$"):
            load_script(script).main(["--dry-run", "--out-dir", str(tmp_path / "out"),
                                      "--inception-weights", str(tmp_path / "missing.pth")])
        assert not (tmp_path / "out").exists()


def test_04_metrics_and_losses_are_sensible(run04):
    out, _ = run04
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"dcgan", "wgan", "wgan_clip0.1"}
    for m in metrics["models"].values():
        assert m["fd_judge"] >= 0 and m["fid"] == FID_NA and m["n"] == 64 and m["epochs_trained"] == 2
    assert [r["clip"] for r in metrics["clip_sweep"]] == [0.01, 0.1]
    rows = list(csv.DictReader(open(out / "losses.csv")))
    assert {r["model"] for r in rows} == {"dcgan", "wgan", "wgan_clip0.1"}
    wgan = [r for r in rows if r["model"] == "wgan"]
    assert all(r["g_loss"] == "" for r in wgan[0::2]) and all(r["g_loss"] != "" for r in wgan[1::2])  # n_critic 2


def test_05_dry_run_reuses_04_and_writes_every_file(run04, tmp_path, capsys):
    from conftest import load_script
    gan_dir, _ = run04
    metrics = load_script("05_cgan_wgangp_fid.py").main(["--dry-run", "--gan-dir", str(gan_dir),
                                                         "--out-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "reusing" in printed and "note:" not in printed  # 04's dry-run runs are finished, with 05's flags
    for name in ["cgan_classes", "wgangp_samples", "cgan_class_diversity", "loss_curve_cgan", "loss_curve_wgangp",
                 "samples_cgan_epoch_002", "samples_wgangp_epoch_002"]:
        assert_png(tmp_path / f"{name}.png")
    assert not (tmp_path / "checkpoint_dcgan.pt").exists()  # reused, not retrained
    assert_npz(tmp_path / "samples_cgan.npz", 100, labels=True)
    for name in ["wgangp", "dcgan", "wgan"]:   # the reused models' samples too: every row can be scored again
        assert_npz(tmp_path / f"samples_{name}.npz", 100)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert list(saved["models"]) == ["dcgan", "wgan", "wgangp", "cgan"]
    assert saved["models"]["dcgan"]["source"].endswith("checkpoint_dcgan.pt")
    assert saved["models"]["dcgan"]["epochs_planned"] == saved["models"]["dcgan"]["epochs_trained"] == 2
    assert len(saved["cgan_per_class"]) == 10 and 0 <= saved["models"]["cgan"]["judge_accuracy"] <= 1
    assert all(r["fd_judge"] >= 0 and r["diversity"] > 0 for r in saved["cgan_per_class"])
    table = (tmp_path / "fid_table.md").read_text()
    for row in ["| DCGAN |", "| WGAN (clipping) |", "| WGAN-GP |", "| cGAN |", "| Ankle boot |", FID_NA]:
        assert row in table
    assert metrics["models"]["wgangp"]["fd_judge"] == saved["models"]["wgangp"]["fd_judge"]


def test_05_notes_an_unfinished_04_run_with_other_flags(tmp_path, capsys):
    """05 reuses whatever 04 checkpoint is there (04 may still run), but says so, in metrics.json and the table."""
    from conftest import load_script
    from common.data import synthetic_dataset
    from common.gan_runs import gan_config
    from common.gan_train import train_gan
    gan_dir, out = tmp_path / "gan", tmp_path / "out"
    gan_dir.mkdir()
    args04 = load_script("04_dcgan_wgan.py").parse_args(["--dry-run", "--width", "12", "--epochs", "1"])
    train_gan("dcgan", gan_config("dcgan", args04), *synthetic_dataset(256), gan_dir, torch.device("cpu"),
              torch.randn(20, args04.z_dim))
    state = torch.load(gan_dir / "checkpoint_dcgan.pt", weights_only=False)
    state["cfg"]["epochs"] = 3  # as 04 leaves it while it still runs: 1 of its 3 epochs done
    torch.save(state, gan_dir / "checkpoint_dcgan.pt")
    load_script("05_cgan_wgangp_fid.py").main(["--dry-run", "--gan-dir", str(gan_dir), "--out-dir", str(out)])
    printed = capsys.readouterr().out
    assert "note: 04's dcgan has 1 of 3 epochs: its row is that model; rerun 05 when 04 is done" in printed
    assert "note: 04's dcgan was trained with --width 12 (this run: 8), --epochs 3 (this run: 2)" in printed
    row = json.loads((out / "metrics.json").read_text())["models"]["dcgan"]
    assert row["source"] == str(gan_dir / "checkpoint_dcgan.pt") and len(row["notes"]) == 2
    assert (row["epochs_trained"], row["epochs_planned"], row["width"]) == (1, 3, 12)
    assert "| DCGAN | 1 of 3 | 12 |" in (out / "fid_table.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["models"]["wgan"]["notes"] == []  # trained here


def test_04_lowest_g_loss_epoch_is_handout_bs_best_epoch():
    from conftest import load_script
    lowest = load_script("04_dcgan_wgan.py").lowest_g_loss_epoch
    assert lowest({"g": [[1.0, 1.2], [0.5, 0.9], [0.8, 0.6], [0.9]]}) == 2     # means 1.1, 0.7, 0.7, 0.9: the first
    assert lowest({"g": [[], [0.4], [0.3, 0.7]]}) == 2                        # an epoch with no G step is skipped
    assert lowest({"g": [[], []]}) is None


def test_04_n_critic_beyond_an_epochs_batches_is_a_one_line_error_before_training(tmp_path):
    from conftest import load_script
    main04 = load_script("04_dcgan_wgan.py").main
    with pytest.raises(SystemExit, match=r"--n-critic 50 is more than the \d+ full batches of an epoch"):
        main04(["--dry-run", "--models", "dcgan", "wgan", "--n-critic", "50", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.glob("checkpoint_*.pt"))               # the DCGAN was not trained first


def test_05_notes_a_reused_wgan_trained_with_another_clip_and_n_critic():
    from conftest import load_script
    from common.gan_runs import gan_config
    m05 = load_script("05_cgan_wgangp_fid.py")
    args04 = load_script("04_dcgan_wgan.py").parse_args(["--dry-run", "--clip", "0.05", "--n-critic", "3"])
    args05 = m05.parse_args(["--dry-run"])
    history = {"d": [[0.0], [0.0]]}
    notes = m05.reuse_notes("wgan", gan_config("wgan", args04), history, args05)
    assert notes == ["04's wgan was trained with --clip 0.05 (this run: 0.01), --n-critic 3 (this run: 2): "
                     "its row is that model, not one with this run's flags"]
    assert m05.reuse_notes("dcgan", gan_config("dcgan", args04), history, args05) == []   # no clip in a DCGAN
    args04 = load_script("04_dcgan_wgan.py").parse_args(["--dry-run", "--dropout", "0.5", "--g-loss", "minimax"])
    assert m05.reuse_notes("dcgan", gan_config("dcgan", args04), history, args05) == [
        "04's dcgan was trained with --dropout 0.5 (this run: 0.3), --g-loss minimax (this run: nonsaturating): "
        "its row is that model, not one with this run's flags"]


@pytest.mark.parametrize("script, bad", [
    ("04_dcgan_wgan.py", ["--epochs", "-3"]),
    ("04_dcgan_wgan.py", ["--clip", "0"]),
    ("04_dcgan_wgan.py", ["--clip", "5"]),
    ("04_dcgan_wgan.py", ["--clip-sweep", "0.1", "-1"]),
    ("05_cgan_wgangp_fid.py", ["--batch-size", "0"]),
    ("05_cgan_wgangp_fid.py", ["--gp-lambda", "-10"]),
])
def test_bad_flags_are_one_line_errors(script, bad, capsys):
    from conftest import load_script
    with pytest.raises(SystemExit) as e:
        load_script(script).parse_args(bad)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
