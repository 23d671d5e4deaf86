"""The plumbing every script shares: a loss that is not finite stops training with one line that says what to do,
checkpoints load to the CPU, files are written whole; the command-line rules; the AMP dtype per GPU."""
import json
import sys
from argparse import Namespace

import pytest
import torch

from common import run
from common.run import Progress, save_checkpoint, save_json
from conftest import load_script


def test_a_loss_that_is_not_finite_stops_training_with_one_line():
    progress = Progress(100, "epoch 3", check=4)
    for loss in (1.0, 2.0, 3.0):
        progress.step(8, loss=torch.tensor(loss))
    with pytest.raises(SystemExit, match="epoch 3: the loss became nan at step 4; run the same command again with a "
                                         r"lower --lr \(no checkpoint was saved yet\)$"):
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


@pytest.mark.parametrize("capability,dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_autocast_takes_bf16_only_where_the_gpu_computes_in_it(capability, dtype, monkeypatch):
    # a T4 (7.5) only emulates bf16: it gets fp16 and its loss scaler; an A100 (8.0) gets bf16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert run.amp_dtype(torch.device("cuda")) == dtype and run.amp_dtype(torch.device("cpu")) is None
