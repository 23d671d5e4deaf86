"""Bad input anywhere is a one-line error that names what to fix, found before any work is done:
flags, devices, output folders, checkpoints of another script, image files for the FD tools."""
import numpy as np
import pytest
import torch

import common.fid as fid
from common import bench, judge, sampler_compare
from common.data import synthetic_dataset, to_uint8
from common.gan_train import train_gan
from common.schedules import ddpm_schedule
from common.train import ddpm_loss, run_epochs
from common.train_state import checked_state, start_training
from common.unet import ConditionalDenoisingUNet, DenoisingUNet
from common.utils import make_out_dir, resolve_device


@pytest.mark.parametrize("script, argv, flag", [
    ("01_ddpm_mnist.py", ["--n-samples", "1"], "--n-samples"),
    ("01_ddpm_mnist.py", ["--lr", "0"], "--lr"),
    ("02_cfg_mnist.py", ["--lr", "-1"], "--lr"),
    ("02_cfg_mnist.py", ["--lr", "nan"], "--lr"),
    ("02_cfg_mnist.py", ["--guidance", "nan"], "--guidance"),
    ("02_cfg_mnist.py", ["--sweep", "5", "5"], "--sweep"),
    ("02_cfg_mnist.py", ["--digits", "3", "--eval-per-class", "1"], "--eval-per-class"),
    ("02_cfg_mnist.py", ["--epochs", "3", "--sample-epochs", "1", "5"], "--sample-epochs"),
    ("06_faces.py", ["--quick", "--epochs", "2", "--sample-epochs", "3"], "--sample-epochs"),
    ("01_ddpm_mnist.py", ["--epochs", "3", "--sample-ep", "1", "5", "10", "15", "20"], "--sample-epochs"),
    ("03_classifier_guidance.py", ["--lr", "inf"], "--lr"),
    ("03_classifier_guidance.py", ["--unet-checkpoint", "/nonexistent/ddpm.pt"], "--unet-checkpoint"),
    ("06_faces.py", ["--target-ages", "18", "nan"], "--target-ages"),
    ("06_faces.py", ["--target-ages", "-5", "200"], "--target-ages"),
    ("06_faces.py", ["--guidance-scale", "inf"], "--guidance-scale"),
])
def test_script_flags(script, argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        __import__("conftest").load_script(script).parse_args(argv)
    assert stop.value.code == 2 and flag in _error_line(capsys)


@pytest.mark.parametrize("argv, grids", [
    (["--epochs", "7"], [1, 5, 7]),              # the default list, cut to the epochs that come, and the last
    (["--epochs", "20"], [1, 5, 10, 15, 20]),
    (["--quick", "--epochs", "1"], [1]),         # a preset's list too
    (["--quick", "--epochs", "3"], [1, 2, 3]),   # the last epoch always has its grid ...
    (["--epochs", "25"], [1, 5, 10, 15, 20, 25]),
    (["--epochs", "32"], [1, 5, 10, 15, 20, 25, 30, 32]),   # the default list goes on every 5 epochs
    (["--quick", "--epochs", "4"], [1, 2, 4]),               # a preset's list is only cut and ended
    (["--dry-run", "--epochs", "20"], [1, 2, 20]),
    (["--epochs", "3", "--sample-epochs", "3", "2"], [3, 2]),   # ... unless the list is given
    (["--epochs", "3", "--sample-epochs", "1"], [1]),
])
def test_default_sample_epochs_go_on_every_5_epochs_and_end_with_epochs(argv, grids):
    assert __import__("conftest").load_script("01_ddpm_mnist.py").parse_args(argv).sample_epochs == grids


def _error_line(capsys):
    """argparse's last stderr line, 'prog: error: ...' (the usage lines above it name every flag)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("parse, argv, flag", [
    (sampler_compare.parse_args, ["--guidance", "nan"], "--guidance"),
    (sampler_compare.parse_args, ["--json", "/nonexistent/rows.json"], "--json"),
    (bench.parse_args, ["--workers", "-1"], "--workers"),
    (bench.parse_args, ["--out", "/nonexistent/rows.md"], "--out"),
    (judge.parse_args, ["--dataset", "mnist", "--shift", "-3"], "--shift"),
    (judge.parse_args, ["--dataset", "mnist", "--lr", "0"], "--lr"),
])
def test_tool_flags(parse, argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2 and flag in _error_line(capsys)


def test_a_device_name_that_is_not_one(tmp_path):
    with pytest.raises(SystemExit, match="--device gpu is not a device"):
        resolve_device("gpu")


def test_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        make_out_dir(tmp_path / "taken", "01_ddpm_mnist.py")


def test_an_out_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(SystemExit, match=r"^error: --out-dir .*notes.txt/run: cannot create it"):
        make_out_dir(tmp_path / "notes.txt" / "run", "01_ddpm_mnist.py")


def test_resuming_another_scripts_checkpoint(tmp_path):
    # 01's and 02's checkpoints share hidden and T; the weights themselves tell them apart
    args = __import__("argparse").Namespace(epochs=1, batch_size=32, lr=1e-3, lr_decay_to=0.1, seed=0, hidden=8,
                                            T=20, resume=False)
    training = start_training(DenoisingUNet(hidden=8), args, torch.device("cpu"), tmp_path / "checkpoint.pt")
    list(run_epochs(training, ddpm_loss, {"x0": synthetic_dataset(32)[0]}, sched=ddpm_schedule(20)))
    with pytest.raises(SystemExit, match="another kind of model"):
        start_training(ConditionalDenoisingUNet(hidden=8), args, torch.device("cpu"), tmp_path / "checkpoint.pt",
                       resume=True)
    # the settings check alone (06 runs it on regressor.pt before training its DDPM)
    checked_state(tmp_path / "checkpoint.pt", "cpu", [("hidden", 8), ("T", 20)])
    with pytest.raises(SystemExit, match="trained with --hidden 8, not 12"):
        checked_state(tmp_path / "checkpoint.pt", "cpu", [("hidden", 12)])
    with pytest.raises(SystemExit, match="not a training checkpoint"):   # 07 counts steps, not epochs
        checked_state(tmp_path / "checkpoint.pt", "cpu", [("hidden", 8)], counter="step")


def test_a_gan_batch_larger_than_the_data(tmp_path):
    x, y = synthetic_dataset(10)
    with pytest.raises(SystemExit, match="--batch-size 64 is more than the 10 training images"):
        train_gan("dcgan", {"batch_size": 64, "n_critic": 1, "seed": 0}, x, y, tmp_path, torch.device("cpu"), None)


def _npz(path, images):
    np.savez(path, images=images)
    return str(path)


@pytest.mark.parametrize("bad, message", [
    ("text", "not a readable .npz"),
    (np.zeros((1, 28, 28), np.uint8), "at least 2"),
    (np.zeros((5, 32, 32), np.uint8), "28×28 grayscale"),
    (np.zeros((5, 28, 28, 3), np.uint8), "28×28 grayscale"),
])
def test_fd_tool_image_files(tmp_path, bad, message):
    good = _npz(tmp_path / "good.npz", to_uint8(synthetic_dataset(20)[0]))
    if isinstance(bad, str):
        (tmp_path / "bad.npz").write_text("not an archive")
        bad_path = str(tmp_path / "bad.npz")
    else:
        bad_path = _npz(tmp_path / "bad.npz", bad)
    with pytest.raises(SystemExit, match=message):
        fid.main([good, bad_path, "--judge-dataset", "mnist", "--no-fid"])


def test_fd_tool_named_weights_that_do_not_exist(tmp_path):
    good = _npz(tmp_path / "good.npz", to_uint8(synthetic_dataset(20)[0]))
    with pytest.raises(SystemExit, match="nonexistent"):
        fid.main([good, good, "--judge-dataset", "mnist", "--inception-weights", str(tmp_path / "nonexistent.pth")])


def test_faces_without_usable_ages_stop_before_training(tmp_path):
    from common.faces_data import save_array, synthetic_faces
    faces, ages = synthetic_faces(20)
    save_array(faces, tmp_path / "f.npy")
    save_array(np.full_like(ages, 150), tmp_path / "a.npy")          # no age in [0, 100]
    with pytest.raises(SystemExit, match="age in \\[0, 100\\]"):
        __import__("conftest").load_script("06_faces.py").main(
            ["--faces", str(tmp_path / "f.npy"), "--ages", str(tmp_path / "a.npy"), "--out-dir", str(tmp_path / "o"),
             "--epochs", "1", "--hidden", "8", "--T", "10", "--merge-ts", "5", "--batch-size", "8"])   # tiny
    assert not (tmp_path / "o").exists()                                # nothing trained, nothing written


def test_a_damaged_04_checkpoint_stops_05_before_training(tmp_path):
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "checkpoint_dcgan.pt").write_bytes(b"\x00damaged")
    with pytest.raises(SystemExit, match="corrupt"):
        __import__("conftest").load_script("05_cgan_wgangp_fid.py").main(
            ["--dry-run", "--gan-dir", str(tmp_path / "gan"), "--out-dir", str(tmp_path / "o")])
    assert not list((tmp_path / "o").glob("checkpoint_*.pt"))          # WGAN-GP and the cGAN never started
