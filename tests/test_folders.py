"""The run folder never loses a result, nor anything else: a fresh run refuses a folder that holds a checkpoint
(--resume, --out-dir or --overwrite); a run owns only the files it wrote (--overwrite, and a start after an
interrupted run, delete exactly those); another script's run, and a real run under --dry-run, are refused;
nothing is written before every check has passed; one run at a time writes there; and a run that stops (Ctrl-C,
out of memory, a full disk) says in one line what the folder holds and what to do next."""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch

from common import folders
from common.folders import clean_exit, open_run, run_folder
from common.judge import JudgeNet
from common.run import read_checkpoint, save_checkpoint
from conftest import load_script
from test_data import write_idx

M01, M02 = load_script("01_ddpm_mnist.py"), load_script("02_cfg_mnist.py")
TINY = ["--data-dir", "data", "--hidden", "8", "--T", "10", "--batch-size", "32", "--n-grid", "4",
        "--n-samples", "8", "--sample-batch", "8", "--out-dir", "run"]
SWEEP = ["--dry-run", "--epochs", "1", "--sample-epochs", "1", "--sweep", "0", "1", "--digits", "0", "1",
         "--per-class", "1"]                                       # 02 in a second: two γ of two samples
USER_FILES = {"notes.md": "my notes", "my_plot.png": "my plot", "model.pt": "my model", "data.csv": "1,2"}


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    """A folder with 64 tiny MNIST images as IDX files in data/ and an untrained judge in results/judge/ (none is
    trained here), and 01's main: a real (not --dry-run) run."""
    monkeypatch.chdir(tmp_path)
    g = np.random.default_rng(0)
    write_idx(tmp_path / "data" / "MNIST" / "raw", g.integers(0, 256, (64, 28, 28)), np.arange(64) % 10)
    (tmp_path / "results" / "judge").mkdir(parents=True)
    save_checkpoint(tmp_path / "results" / "judge" / "mnist.pt", {"dataset": "mnist"}, model=JudgeNet(),
                    test_accuracy=0.1)
    return M01.main


@pytest.fixture(scope="module")
def run02(tmp_path_factory):
    """A finished 02 dry run (SWEEP), to be copied: it holds sweep/gamma_0.npz and gamma_1.npz."""
    out = tmp_path_factory.mktemp("02") / "run"
    M02.main(SWEEP + ["--out-dir", str(out)])
    return out


def put_user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)


def user_files_intact(folder):
    return all((folder / name).read_text() == text for name, text in USER_FILES.items())


def snapshot(folder):
    """Every file under `folder`, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stop_with(error):
    def stop(*args, **kwargs):
        raise error
    return stop


def args_for(out, **settings):
    defaults = dict(out_dir=str(out), quick=False, dry_run=False, resume=False, overwrite=False, epochs=1)
    return Namespace(**{**defaults, **settings})


def open_folder(out, **settings):
    """01's folder `out`, checked and opened as 01's main does."""
    args = args_for(out, **settings)
    return open_run(args, run_folder(args, "01_ddpm_mnist.py"))


# --- a run owns what it wrote, and only that ---

def test_a_second_run_refuses_the_folder_and_overwrite_replaces_only_what_the_run_wrote(mnist, tmp_path):
    mnist(TINY + ["--epochs", "3", "--sample-epochs", "1", "2", "3"])
    put_user_files(tmp_path / "run")                         # a student's notes beside the results
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as e:                     # the same command again, without --resume
        mnist(TINY + ["--epochs", "3", "--sample-epochs", "1", "2", "3"])
    message = str(e.value)
    assert "\n" not in message and all(way in message for way in ("--resume", "--out-dir", "--overwrite"))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint
    mnist(TINY + ["--epochs", "2", "--overwrite"])          # afresh: epoch 3's grid of the old run is gone
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "samples_epoch_003.png" not in names and {"samples_epoch_001.png", "samples_epoch_002.png"} <= names
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2 and user_files_intact(tmp_path / "run")


def test_users_files_survive_an_interrupted_first_run_and_the_same_command_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    put_user_files(out)
    argv = ["--dry-run", "--out-dir", str(out)]
    save_losses_csv = M01.save_losses_csv
    monkeypatch.setattr(M01, "save_losses_csv", stop_with(KeyboardInterrupt))   # Ctrl-C in epoch 1
    with pytest.raises(SystemExit) as stop, clean_exit():
        M01.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "run the same command again" in err and "no checkpoint was saved yet" in err
    monkeypatch.setattr(M01, "save_losses_csv", save_losses_csv)
    M01.main(argv)                                           # the same command again
    assert user_files_intact(out) and read_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_a_file_the_run_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "losses.csv").write_text("my own losses")           # named as the run's outputs are
    with pytest.raises(SystemExit) as stop:
        M01.main(["--dry-run", "--out-dir", str(out)])
    assert f"{out / 'losses.csv'} is not a file that this script's runs wrote: move it out" in str(stop.value)
    assert "\n" not in str(stop.value) and (out / "losses.csv").read_text() == "my own losses"
    (out / "losses.csv").rename(tmp_path / "losses.csv")       # moved away: the same command again works
    M01.main(["--dry-run", "--out-dir", str(out)])
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_a_subfolder_in_sweep_stays_and_overwrite_draws_the_sweep_again(run02, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run02, out)
    (out / "sweep" / "mine").mkdir()
    (out / "sweep" / "mine" / "notes.md").write_text("mine")
    for _ in range(2):                                       # a crash here would come back on every retry
        M02.main(SWEEP + ["--out-dir", str(out), "--overwrite"])
    assert sorted(p.name for p in (out / "sweep").iterdir()) == ["gamma_0.npz", "gamma_1.npz", "mine"]
    assert (out / "sweep" / "mine" / "notes.md").read_text() == "mine"


def test_a_damaged_sweep_part_is_named_and_drawn_again(run02, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run02, out)
    part = out / "sweep" / "gamma_1.npz"
    part.write_bytes(part.read_bytes()[:300])                # cut short
    M02.main(SWEEP + ["--out-dir", str(out), "--resume"])
    assert f"note: {part} is damaged (BadZipFile): it is drawn again" in capsys.readouterr().out
    assert np.array_equal(np.load(out / "samples.npz")["images"], np.load(run02 / "samples.npz")["images"])


def test_overwrite_never_replaces_a_checkpoint_that_no_run_of_the_script_wrote(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.md").write_text("mine")
    save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist"}, epoch=1)   # copied in by hand
    before = snapshot(out)
    with pytest.raises(SystemExit, match=r"holds checkpoint.pt, which the record of what 01_ddpm_mnist's runs wrote "
                                         r"there \(.written\) does not list: move them away"):
        open_folder(out, overwrite=True)
    assert snapshot(out) == before


def test_overwrite_on_a_run_folder_without_a_record_replaces_its_files_and_deletes_none(run02, tmp_path):
    # a folder that this script's runs wrote before they kept .written: --overwrite works, and a user's file stays
    out = tmp_path / "old"
    shutil.copytree(run02, out)
    (out / ".written").unlink()
    (out / "notes.md").write_text("mine")
    M02.main(SWEEP + ["--out-dir", str(out), "--overwrite"])
    assert (out / "notes.md").read_text() == "mine"
    assert {"config.json", "checkpoint.pt"} <= set((out / ".written").read_text().splitlines())


# --- another script's run, and a real run under --dry-run, are refused ---

def test_another_scripts_run_is_refused_with_overwrite_or_not(run02, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run02, out)
    before = snapshot(out)
    for flags in ([], ["--overwrite"]):                      # both 01 and 02 write checkpoint.pt
        with pytest.raises(SystemExit, match=r"^error: \S+ holds a run of 02_cfg_mnist \(its config.json says so\), "
                                             r"which 01_ddpm_mnist never replaces: use another --out-dir$"):
            M01.main(["--dry-run", "--out-dir", str(out)] + flags)
    assert snapshot(out) == before


def test_a_dry_run_never_continues_or_replaces_a_real_run(mnist, tmp_path):
    real = ["--data-dir", "data", "--hidden", "8", "--T", "10", "--batch-size", "64", "--n-grid", "4",
            "--n-samples", "8", "--sample-batch", "8", "--epochs", "2", "--out-dir", "run"]   # --dry-run's settings
    mnist(real)
    before = snapshot(tmp_path / "run")
    with pytest.raises(SystemExit, match=r"^error: run/checkpoint.pt is a real run's, which --dry-run never "
                                         r"continues: use another --out-dir$"):
        mnist(["--dry-run", "--out-dir", "run", "--epochs", "3", "--resume"])
    with pytest.raises(SystemExit, match="holds a real run of 01_ddpm_mnist, which a --dry-run never replaces"):
        mnist(["--dry-run", "--out-dir", "run", "--overwrite"])
    assert snapshot(tmp_path / "run") == before             # every byte as it was
    open_folder(tmp_path / "dry", dry_run=True)              # a dry run's folder ...
    save_checkpoint(tmp_path / "dry" / "checkpoint.pt", {"script": "01_ddpm_mnist", "dry_run": True}, epoch=2)
    with pytest.raises(SystemExit, match="is a --dry-run's .synthetic data.: add --dry-run to continue it"):
        open_folder(tmp_path / "dry", resume=True, epochs=2)
    assert open_folder(tmp_path / "dry", dry_run=True) == tmp_path / "dry"     # ... is replaced by a dry run
    assert not (tmp_path / "dry" / "checkpoint.pt").exists()


# --- nothing is written before every check has passed ---

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


def test_a_damaged_judge_file_stops_the_run_before_it_trains(mnist, tmp_path):
    (tmp_path / "results" / "judge" / "mnist.pt").write_bytes(b"half a file")
    with pytest.raises(SystemExit, match=r"^error: results/judge/mnist.pt is damaged or not a mnist judge of these "
                                         r"scripts \(\w+\): delete it, and the next run trains a new one"):
        mnist(TINY + ["--epochs", "1"])
    assert not (tmp_path / "run").exists()


def test_another_scripts_or_a_foreign_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint.pt", {"script": "02_cfg_mnist", "hidden": 8}, epoch=1)
    with pytest.raises(SystemExit, match="written by 02_cfg_mnist, not 01_ddpm_mnist"):
        open_folder(out, resume=True)
    for foreign in (torch.nn.Linear(2, 2), {"model": {}}, "not a dict"):      # a whole model; no args; junk
        torch.save(foreign, out / "checkpoint.pt")
        with pytest.raises(SystemExit, match="not a checkpoint of these scripts") as e:
            open_folder(out, resume=True)
        assert "\n" not in str(e.value)
    (out / "checkpoint.pt").write_bytes(b"half a file")
    with pytest.raises(SystemExit, match="damaged"):
        read_checkpoint(out / "checkpoint.pt")


def test_an_out_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        open_folder(tmp_path / "file")
    with pytest.raises(SystemExit, match="cannot write there"):
        open_folder(tmp_path / "file" / "below")
    monkeypatch.setattr(type(tmp_path), "write_text", stop_with(PermissionError(13, "Permission denied")))
    with pytest.raises(SystemExit, match="cannot write there .Permission denied."):   # a folder of another user
        open_folder(tmp_path / "theirs")


def test_one_run_at_a_time_and_a_lock_of_a_process_that_is_not_the_run_is_taken_over(tmp_path):
    out, host = tmp_path / "run", socket.gethostname()
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for lock, who in ((f"{other.pid} {host} {folders.started(other.pid)}", f"another run .pid {other.pid}."),
                          (f"{other.pid} {host}", f"pid {other.pid} .a run, or a process that got its pid later.")):
            (out / ".lock").write_text(lock)                       # a live run's, and one that cannot be told
            with pytest.raises(SystemExit, match=f"^error: {who} holds {out / '.lock'}: wait for it to end"):
                open_folder(out)
        (out / ".lock").write_text(f"{other.pid} {host} 1")   # its pid, but a process that started at another time:
        assert open_folder(out) == out                          # the run is gone, and the pid was given again
    finally:
        other.kill()
        other.wait()
    (out / ".lock").write_text(f"{other.pid} {host}")
    assert open_folder(out) == out                              # its process is gone: taken over
    assert (out / ".lock").read_text().split()[0] == str(os.getpid())


def test_a_temporary_file_that_a_killed_write_left_is_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    M01.main(["--dry-run", "--epochs", "1", "--out-dir", str(out)])
    (out / "checkpoint.pt.4242.tmp").write_bytes(b"half a checkpoint")   # kill -9 inside save_checkpoint's write
    (out / ".written.4242.tmp").write_text("config.json\n")              # ... or inside the record's
    (out / "notes.md.4242.tmp").write_text("mine")                       # a name the run never wrote
    M01.main(["--dry-run", "--epochs", "2", "--out-dir", str(out), "--resume"])
    assert sorted(p.name for p in out.glob("*.tmp")) == ["notes.md.4242.tmp"]


# --- a run that stops says what the folder holds, and what to do next ---

def test_ctrl_c_says_what_the_folder_holds_at_that_moment(tmp_path, capsys):
    for moment, expected in (("reading the data", "run the same command again (nothing was written)"),
                             ("epoch 1", "run the same command again (no checkpoint was saved yet)"),
                             ("epoch 2", "add --resume to the same command to continue from checkpoint.pt")):
        if moment == "epoch 1":
            out = open_folder(tmp_path / "run")
        if moment == "epoch 2":
            save_checkpoint(out / "checkpoint.pt", {"script": "01_ddpm_mnist"}, epoch=1)
        with pytest.raises(SystemExit) as e, clean_exit():
            raise KeyboardInterrupt
        assert e.value.code == 130
        assert f"interrupted: {expected}" in capsys.readouterr().err
    with pytest.raises(SystemExit), clean_exit():                     # SIGTERM (a cluster's time limit) too
        os.kill(os.getpid(), signal.SIGTERM)
    assert "interrupted:" in capsys.readouterr().err


def test_out_of_memory_and_a_full_disk_end_with_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    argv = ["--dry-run", "--epochs", "1", "--out-dir", str(tmp_path / "run")]
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 4014080000 bytes. Error code 12 (Cannot allocate memory)")
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    disk = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "samples_final.png.1.tmp"))
    for error, where, says in [
            (cpu, "save_losses_csv", "out of memory: run the same command again with a lower --batch-size or "
                                     "--sample-batch (no checkpoint was saved yet)"),
            (gpu, "check_finite", "out of memory: checkpoint.pt is intact: add --resume to the same command to "
                                  "continue from it (with a lower --sample-batch if it ran out while sampling)"),
            (disk, "save_grid", "no space left on the disk that holds {}: free some, then add --resume to the "
                                "same command to continue from checkpoint.pt".format(disk.filename))]:
        with monkeypatch.context() as patch, pytest.raises(SystemExit) as stop, clean_exit():
            patch.setattr(M01, where, stop_with(error))
            M01.main(argv + ["--resume"] * (where == "save_grid"))   # the disk fills while it redraws the samples
        assert str(stop.value).startswith(f"error: {says}") and "\n" not in str(stop.value)
    M01.main(argv + ["--resume", "--sample-batch", "4"])              # it continues, with a lower --sample-batch
    with pytest.raises(RuntimeError, match="mat1 and mat2"), clean_exit():   # any other error: as it was
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
