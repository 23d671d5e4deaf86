"""common/utils.py and common/files.py: the setup every script shares, and files written atomically."""
import csv
import json
import os
import signal
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.files import save_npz, write_csv, write_text
from common.plotting import save_grid
from common.utils import default_eval_batch, format_rate, interruptible, load_grad_scaler, make_out_dir, start_run


def test_eval_batch_defaults_to_the_device_and_is_recorded(tmp_path):
    assert default_eval_batch(torch.device("cuda")) == 1000 and default_eval_batch(torch.device("cpu")) == 100
    args = Namespace(device="cpu", seed=0, out_dir=str(tmp_path / "a"), eval_batch=None)
    device, out = start_run(args, "01_ddpm_mnist.py")
    assert args.eval_batch == 100 and json.loads((out / "config.json").read_text())["eval_batch"] == 100
    args = Namespace(device="cpu", seed=0, out_dir=str(tmp_path / "b"), eval_batch=7)
    start_run(args, "01_ddpm_mnist.py")
    assert args.eval_batch == 7                                         # an explicit value is kept


@pytest.mark.parametrize("name", ["01_ddpm_mnist.py", "02_cfg_mnist.py", "03_classifier_guidance.py"])
def test_scripts_leave_eval_batch_to_the_device(script, name):
    assert script(name).parse_args([]).eval_batch is None              # resolved once the device is known
    assert script(name).parse_args(["--eval-batch", "32"]).eval_batch == 32


def test_progress_rates_below_ten_per_second_keep_two_digits():
    assert [format_rate(r) for r in (12345.6, 10, 9.87, 0.297, 0.0123)] == ["12,346", "10", "9.9", "0.3", "0.012"]


def test_interrupt_inside_the_block_is_one_line_and_status_130(capsys):
    with pytest.raises(SystemExit) as stop:
        with interruptible("continue with --resume"):
            raise KeyboardInterrupt
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted: continue with --resume"


def test_nested_interrupts_print_the_inner_hint_once_and_restore_sigterm(capsys):
    original = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        with interruptible("outer hint"):           # a script's main()
            with interruptible("inner hint"):       # its training loop
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)                       # the handler raises before this ends
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted: inner hint"]
    assert signal.getsignal(signal.SIGTERM) == original


def test_write_csv_round_trips_byte_for_byte_and_leaves_only_the_file(tmp_path):
    write_csv([["epoch", "note"], [1, "a, quoted"]], tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_bytes() == b'epoch,note\r\n1,"a, quoted"\r\n'   # csv's own line ends
    with open(tmp_path / "t.csv", newline="") as f:
        assert list(csv.reader(f)) == [["epoch", "note"], ["1", "a, quoted"]]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def _write_half_then_ctrl_c(self, data):
    """Stands in for Path.write_bytes: two bytes reach the disk, then Ctrl-C."""
    with open(self, "wb") as f:
        f.write(data[:2])
    raise KeyboardInterrupt


def test_an_interrupted_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "table.md"
    write_text("old γ\n", path)
    monkeypatch.setattr(Path, "write_bytes", _write_half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_text("new and longer\n", path)
    assert path.read_text(encoding="utf-8") == "old γ\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_an_interrupted_figure_or_npz_keeps_the_previous_file(tmp_path, monkeypatch):
    save_grid(np.zeros((4, 28, 28), np.uint8), tmp_path / "grid.png", ncols=2)
    save_npz(tmp_path / "samples.npz", images=np.zeros((2, 28, 28), np.uint8))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before["grid.png"][:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(Path, "write_bytes", _write_half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_grid(np.full((4, 28, 28), 255, np.uint8), tmp_path / "grid.png", ncols=2)
    with pytest.raises(KeyboardInterrupt):
        save_npz(tmp_path / "samples.npz", images=np.ones((3, 28, 28), np.uint8))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with np.load(tmp_path / "samples.npz") as saved:
        assert saved["images"].shape == (2, 28, 28)


def _ctrl_c(*args, **kwargs):
    """Stands in for common.utils.resolve_device: Ctrl-C the moment it is called."""
    raise KeyboardInterrupt


@pytest.mark.parametrize("module, argv", [("common.judge", ["--dataset", "mnist", "--dry-run"]),
                                          ("common.fid", ["mnist-test", "mnist-train"]),
                                          ("common.sampler_compare", ["--dry-run"]),
                                          ("common.bench", ["--dry-run"])])
def test_command_line_tools_end_ctrl_c_with_one_line(module, argv, monkeypatch, capsys):
    """`python -m common.<tool>`: Ctrl-C is one line and status 130, like the numbered scripts."""
    import runpy
    import common.utils
    monkeypatch.setattr(common.utils, "resolve_device", _ctrl_c)  # the first thing each main() does after parsing
    monkeypatch.setattr(sys, "argv", [module] + argv)
    monkeypatch.delitem(sys.modules, module, raising=False)       # run it afresh, as `python -m` does
    with pytest.raises(SystemExit) as stop:
        runpy.run_module(module, run_name="__main__")
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err.strip().startswith("interrupted: ") and "\n" not in err.strip()


def test_an_empty_grad_scaler_state_resumes_on_an_fp16_device():
    """A checkpoint from the CPU or a bf16 GPU holds an empty scaler state; an fp16 run must still resume it."""
    fp16 = torch.amp.GradScaler("cpu", enabled=True)     # stands in for a T4's enabled scaler
    with pytest.raises(RuntimeError):
        fp16.load_state_dict({})                          # what a plain load_state_dict does
    load_grad_scaler(fp16, {})
    assert fp16.get_scale() == 65536.0                    # a fresh scale
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0).state_dict()
    load_grad_scaler(fp16, saved)
    assert fp16.get_scale() == 8.0                        # a real state is restored


def test_a_dry_run_writes_apart_from_real_runs(tmp_path, monkeypatch):
    # 03 loads results/01_ddpm_mnist/checkpoint.pt and 05 reuses results/04_dcgan_wgan/: a dry run's tiny
    # models must never land there
    monkeypatch.chdir(tmp_path)
    assert make_out_dir(None, "/x/01_ddpm_mnist.py") == Path("results/01_ddpm_mnist")
    assert make_out_dir(None, "/x/04_dcgan_wgan.py", dry_run=True) == Path("results/04_dcgan_wgan/dry-run")
    assert make_out_dir("mine", "/x/04_dcgan_wgan.py", dry_run=True) == Path("mine")
    assert (tmp_path / "results/04_dcgan_wgan/dry-run").is_dir()


def test_help_spells_out_the_presets(script, capsys):
    with pytest.raises(SystemExit):
        script("01_ddpm_mnist.py").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())     # undo the line wrapping
    assert "--quick means: --hidden 32 --epochs 2 --T 100" in text
    assert "--dry-run means: --hidden 8 --epochs 2 --T 10" in text


def test_a_script_dry_run_leaves_the_real_run_folder_alone(script, tmp_path, monkeypatch):
    # through start_run, as every script calls it: the dry run's checkpoint lands in dry-run/, where 03 never looks
    monkeypatch.chdir(tmp_path)
    script("01_ddpm_mnist.py").main(["--dry-run", "--epochs", "1", "--sample-epochs", "1"])
    assert (tmp_path / "results/01_ddpm_mnist/dry-run/checkpoint.pt").is_file()
    assert not (tmp_path / "results/01_ddpm_mnist/checkpoint.pt").exists()
