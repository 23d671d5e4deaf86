"""The run folder never loses a result: a fresh run refuses a folder that holds a checkpoint (--resume,
--out-dir or --overwrite), nothing is written before the inputs are read, one run at a time writes there,
foreign or damaged checkpoints are one-line errors, Ctrl-C says what is saved, and files are written whole.
Also the command-line rules every script shares."""
import json
import os
import signal
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch

from common import run
from common.run import Progress, on_interrupt, open_run, read_checkpoint, save_checkpoint, save_json
from conftest import load_script
from test_data import write_idx

TINY = ["--data-dir", "data", "--hidden", "8", "--T", "10", "--batch-size", "32", "--n-grid", "4",
        "--n-samples", "8", "--sample-batch", "8", "--out-dir", "run"]


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    """A folder with 64 tiny MNIST images as IDX files in data/, and 01's main: a real (not --dry-run) run."""
    monkeypatch.chdir(tmp_path)
    g = np.random.default_rng(0)
    write_idx(tmp_path / "data" / "MNIST" / "raw", g.integers(0, 256, (64, 28, 28)), np.arange(64) % 10)
    return load_script("01_ddpm_mnist.py").main


def test_a_second_run_refuses_the_folder_and_overwrite_starts_afresh(mnist, tmp_path):
    mnist(TINY + ["--epochs", "3", "--sample-epochs", "1", "2", "3"])
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as e:                     # the same command again, without --resume
        mnist(TINY + ["--epochs", "3", "--sample-epochs", "1", "2", "3"])
    message = str(e.value)
    assert "\n" not in message and all(way in message for way in ("--resume", "--out-dir", "--overwrite"))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint
    mnist(TINY + ["--epochs", "2", "--overwrite"])          # afresh: epoch 3's grid of the old run is gone
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "samples_epoch_003.png" not in names and {"samples_epoch_001.png", "samples_epoch_002.png"} <= names
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2


def test_a_failed_run_writes_nothing(mnist, tmp_path):
    mnist(TINY + ["--epochs", "2"])
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(SystemExit, match="could not load MNIST"):           # a data error: config.json kept
        mnist(TINY + ["--epochs", "3", "--resume", "--data-dir", "elsewhere"])
    with pytest.raises(SystemExit, match="trained with --hidden 8, not 16"):  # a rejected --resume: kept
        mnist(TINY + ["--epochs", "3", "--resume", "--hidden", "16"])
    with pytest.raises(SystemExit, match="has trained 2 epochs, more than --epochs 1"):
        mnist(TINY + ["--epochs", "1", "--resume"])
    assert (tmp_path / "run" / "config.json").read_text() == config
    with pytest.raises(SystemExit, match="no checkpoint in new"):          # --resume into a folder not there
        mnist(TINY[:-1] + ["new", "--resume"])
    assert not (tmp_path / "new").exists()
    mnist(TINY + ["--epochs", "3", "--resume"])                           # accepted: this run's settings
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 3


def args_for(out, **settings):
    defaults = dict(out_dir=str(out), quick=False, dry_run=False, resume=False, overwrite=False, epochs=1)
    return Namespace(**{**defaults, **settings})


def test_another_scripts_or_a_foreign_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint.pt", {"script": "02_cfg_mnist", "hidden": 8}, epoch=1)
    with pytest.raises(SystemExit, match="written by 02_cfg_mnist, not 01_ddpm_mnist"):
        open_run(args_for(out, resume=True), "01_ddpm_mnist.py")
    for foreign in (torch.nn.Linear(2, 2), {"model": {}}, "not a dict"):      # a whole model; no args; junk
        torch.save(foreign, out / "checkpoint.pt")
        with pytest.raises(SystemExit, match="not a checkpoint of these scripts") as e:
            open_run(args_for(out, resume=True), "01_ddpm_mnist.py")
        assert "\n" not in str(e.value)
    (out / "checkpoint.pt").write_bytes(b"half a file")
    with pytest.raises(SystemExit, match="damaged"):
        read_checkpoint(out / "checkpoint.pt")


def test_an_out_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        open_run(args_for(tmp_path / "file"), "01_ddpm_mnist.py")
    with pytest.raises(SystemExit, match="cannot write there"):
        open_run(args_for(tmp_path / "file" / "below"), "01_ddpm_mnist.py")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "write_text", refuse)   # as a folder of another user would
    with pytest.raises(SystemExit, match="cannot write there .Permission denied."):
        open_run(args_for(tmp_path / "theirs"), "01_ddpm_mnist.py")


def test_one_run_at_a_time_and_a_dead_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".lock").write_text(f"{other.pid} {run.socket.gethostname()}")
        with pytest.raises(SystemExit, match=f"another run .pid {other.pid}. is writing to"):
            open_run(args_for(out), "01_ddpm_mnist.py")
    finally:
        other.kill()
        other.wait()
    assert open_run(args_for(out), "01_ddpm_mnist.py") == out        # its process is gone: taken over
    assert (out / ".lock").read_text().split()[0] == str(os.getpid())


def test_overwrite_never_empties_a_folder_that_is_not_this_scripts_run(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.md").write_text("mine")
    save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist"}, epoch=1)
    open_run(args_for(out, overwrite=True), "01_ddpm_mnist.py")
    assert (out / "thesis.md").read_text() == "mine"                  # no config.json of 01's: nothing cleared


def test_ctrl_c_says_what_the_folder_holds_at_that_moment(tmp_path, capsys):
    out = open_run(args_for(tmp_path / "run"), "01_ddpm_mnist.py")
    for saved, expected in ((False, "no checkpoint was saved yet"), (True, "add --resume")):
        if saved:
            save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist"}, epoch=1)
        with pytest.raises(SystemExit) as e, on_interrupt():
            raise KeyboardInterrupt
        assert e.value.code == 130
        assert expected in capsys.readouterr().err
    with pytest.raises(SystemExit), on_interrupt():                   # SIGTERM (a cluster's time limit) too
        os.kill(os.getpid(), signal.SIGTERM)
    assert "interrupted:" in capsys.readouterr().err


def test_a_loss_that_is_not_finite_stops_training_with_one_line():
    progress = Progress(100, "epoch 3", check=4)
    for loss in (1.0, 2.0, 3.0):
        progress.step(8, loss=torch.tensor(loss))
    with pytest.raises(SystemExit, match="epoch 3: the loss became nan at step 4; try a lower --lr"):
        progress.step(8, loss=torch.tensor(float("nan")))
    assert progress.losses() == [1.0, 2.0, 3.0, pytest.approx(float("nan"), nan_ok=True)]


def test_a_checkpoint_loads_to_the_cpu_so_adams_step_counters_stay_there(tmp_path):
    # on a GPU, Adam reads a `step` counter that sits on the device back with .item(): a sync per parameter at every
    # step of a resumed run. Parameters on the "meta" device stand in for the GPU's here.
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "checkpoint.pt", Namespace(seed=0), epoch=1, model=model, optimizer=optimizer)
    on_device = torch.nn.Linear(3, 2).to("meta")
    optimizer = torch.optim.Adam(on_device.parameters())
    run.load_checkpoint(tmp_path / "checkpoint.pt", optimizer=optimizer)
    states = list(optimizer.state.values())
    assert len(states) == 2 and all(state["step"].device.type == "cpu" for state in states)
    assert all(state["exp_avg"].device.type == "meta" for state in states)   # the rest follows the parameters


def test_an_interrupted_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    save_json({"a": 1}, path)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(run.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_json({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


SCRIPTS = ["01_ddpm_mnist.py", "02_cfg_mnist.py", "03_classifier_guidance.py", "04_dcgan_wgan.py",
           "05_cgan_wgangp_fid.py", "06_faces.py", "07_afhq_cosine.py"]
BAD = [  # (script, flags, what the one-line error says)
    ("01_ddpm_mnist.py", ["--lr", "-1e-3"], "invalid positive number value: '-1e-3'"),
    ("01_ddpm_mnist.py", ["--seed", "99999999999999999999"], "invalid seed"),
    ("01_ddpm_mnist.py", ["--epochs", "-3"], "invalid positive integer value: '-3'"),
    ("01_ddpm_mnist.py", ["--beta-1", "0.5", "--beta-T", "0.1"], "need 0 < --beta-1 <= --beta-T < 1"),
    ("01_ddpm_mnist.py", ["--sample-epochs", "30"], "beyond --epochs 20"),
    ("01_ddpm_mnist.py", ["--quick", "--dry-run"], "two presets"),
    ("02_cfg_mnist.py", ["--guidance", "1e300"], "invalid guidance scale"),
    ("02_cfg_mnist.py", ["--sweep", "0", "inf"], "invalid guidance scale"),
    ("02_cfg_mnist.py", ["--digits", "3", "3"], "--digits lists a value twice"),
    ("02_cfg_mnist.py", ["--sweep", "1", "5", "1"], "--sweep lists a value twice"),
    ("02_cfg_mnist.py", ["--p-uncond", "1.5"], "invalid number in [0, 1]"),
    ("03_classifier_guidance.py", ["--scales", "0", "inf"], "invalid guidance scale"),
    ("03_classifier_guidance.py", ["--digits", "3", "3"], "--digits lists a value twice"),
    ("06_faces.py", ["--target-ages", "40", "40"], "--target-ages lists a value twice"),
    ("04_dcgan_wgan.py", ["--clip-sweep", "0.1", "0.1"], "--clip-sweep lists a value twice"),
]


@pytest.mark.parametrize("name,flags,says", BAD)
def test_bad_flags_are_one_line_usage_errors(name, flags, says, capsys):
    with pytest.raises(SystemExit) as e:
        load_script(name).parse_args(flags)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error:" in err[-1] and says in err[-1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_documents_every_flag_and_lists_the_presets(name, capsys):
    parse = load_script(name).parse_args
    with pytest.raises(SystemExit) as e:
        parse(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "default: None" not in text and "default: False" not in text
    options = text[text.index("options:"):].split("\n")
    for line, after in zip(options, options[1:] + [""]):     # every flag has its help, on its line or the next
        if line.startswith("  --") and "  " not in line.strip():
            assert after.startswith(" " * 10), f"{line.strip()} has no help"
    flat = " ".join(text.split())
    for preset in ("quick", "dry-run"):                     # the flags listed for a preset reproduce it
        listed = flat.split(f"--{preset} means: ")[1].split(". --dry-run means:")[0].rstrip(".").split()
        with_preset, from_listed = vars(parse([f"--{preset}"])), vars(parse(listed))
        with_preset.pop(preset.replace("-", "_"))
        from_listed.pop(preset.replace("-", "_"))
        assert from_listed == with_preset, preset


def test_a_list_typed_in_the_shell_is_checked_too(monkeypatch, capsys):
    # main() parses sys.argv: --sample-epochs beyond --epochs is refused there as well, not silently replaced
    monkeypatch.setattr(sys, "argv", ["01_ddpm_mnist.py", "--sample-epochs", "30"])
    with pytest.raises(SystemExit):
        load_script("01_ddpm_mnist.py").parse_args(None)
    assert "--sample-epochs 30 is beyond --epochs 20" in capsys.readouterr().err


def test_a_dry_run_replaces_a_dry_run_but_never_a_real_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist", "dry_run": False}, epoch=20)
    with pytest.raises(SystemExit, match="holds an earlier run"):
        open_run(args_for(out, dry_run=True), "01_ddpm_mnist.py")
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 20
    save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist", "dry_run": True}, epoch=2)
    assert open_run(args_for(out, dry_run=True), "01_ddpm_mnist.py") == out


@pytest.mark.parametrize("capability,dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_autocast_takes_bf16_only_where_the_gpu_computes_in_it(capability, dtype, monkeypatch):
    # a T4 (7.5) only emulates bf16: it gets fp16 and its loss scaler; an A100 (8.0) gets bf16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert run.amp_dtype(torch.device("cuda")) == dtype and run.amp_dtype(torch.device("cpu")) is None
