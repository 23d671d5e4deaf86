"""03_classifier_guidance.py and what it is given: a 01 DDPM whose training was interrupted is finished (01
--resume), never guided half-trained, and a Ctrl-C while 03 trains it says to rerun 03; --cfg-samples is
checked before any work; another script's checkpoint is refused for what it lacks, without guessing which
script wrote it; --help's description is a whole sentence."""
import re

import numpy as np
import pytest
import torch

import common.train
from common.unet import ConditionalDenoisingUNet, DenoisingUNet

CPU = torch.device("cpu")
SCHEDULE = {"hidden": 4, "T": 5, "beta_1": 1e-3, "beta_T": 0.1}


class InterruptSecondEpoch:
    """Stands in for common.train.fit_epoch: the first epoch trains, the second is a Ctrl-C."""

    def __init__(self, fit_epoch):
        self.fit_epoch, self.calls = fit_epoch, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.fit_epoch(*args, **kwargs)


def test_a_ctrl_c_in_01_says_rerun_03_and_the_rerun_finishes_01_exactly(script, tmp_path, monkeypatch, capsys):
    cg, argv = script("03_classifier_guidance.py"), ["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(common.train, "fit_epoch", InterruptSecondEpoch(common.train.fit_epoch))
    with pytest.raises(SystemExit) as stop:
        cg.frozen_ddpm(cg.parse_args(argv), tmp_path, CPU)            # 03 trains 01 --dry-run (2 epochs)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "rerun the same 03_classifier_guidance.py command" in err, err
    assert "--resume" not in err                                       # 03 has no such flag
    path = tmp_path / "01_dry_run" / "checkpoint.pt"
    assert torch.load(path, weights_only=False)["epoch"] == 1
    # the same 03 command again: 01 --resume trains epoch 2 before the DDPM is frozen ...
    unet, _, info, _ = cg.frozen_ddpm(cg.parse_args(argv), tmp_path, CPU)
    assert info["epochs_trained"] == 2 and "holds 1 of its 2 epochs" in capsys.readouterr().out
    # ... to the same weights as an uninterrupted 01 run
    script("01_ddpm_mnist.py").main(["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path / "straight")])
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(straight[k], v) for k, v in unet.state_dict().items())


@pytest.mark.parametrize("argv", [
    [], ["--quick"], ["--dry-run", "--epochs", "3", "--beta-T", "0.05"],
    ["--hidden", "16", "--sample-epochs", "2", "4", "--epochs", "4", "--sampler", "ddim"],
])
def test_started_with_gives_back_every_setting_of_a_01_run(script, argv):
    ddpm = script("01_ddpm_mnist.py")
    saved = vars(ddpm.parse_args(argv + ["--out-dir", "somewhere", "--device", "cpu"]))
    again = vars(ddpm.parse_args(script("03_classifier_guidance.py").started_with(saved) + ["--resume"]))
    differs = {k for k in saved if saved[k] != again[k]}
    assert differs == {"out_dir", "device", "resume"}, differs       # what 03 passes itself


def test_an_unfinished_01_without_train_unet_is_refused_with_its_resume_command(script, tmp_path):
    cg = script("03_classifier_guidance.py")
    saved = dict(SCHEDULE, epochs=3, lr=0.001, sample_epochs=[1, 3], quick=False, resume=True, out_dir="x")
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": DenoisingUNet(hidden=4).state_dict(), "args": saved, "epoch": 1}, path)
    with pytest.raises(SystemExit) as stop:
        cg.frozen_ddpm(cg.parse_args(["--unet-checkpoint", str(path)]), tmp_path, CPU)
    message = str(stop.value)
    assert f"{path} holds 1 of its 3 epochs" in message and message.endswith("or pass --train-unet")
    assert ("`python 01_ddpm_mnist.py --hidden 4 --T 5 --beta-1 0.001 --beta-T 0.1 --epochs 3 --lr 0.001 "
            f"--sample-epochs 1 3 --resume --out-dir {tmp_path}`") in message
    saved["epochs"] = 1                                                 # a finished one is used as it is
    torch.save({"model": DenoisingUNet(hidden=4).state_dict(), "args": saved, "epoch": 1}, path)
    assert cg.frozen_ddpm(cg.parse_args(["--unet-checkpoint", str(path)]), tmp_path, CPU)[2]["epochs_trained"] == 1


@pytest.mark.parametrize("model, mismatch", [
    (DenoisingUNet(1, 4, 48), r"0 tensors missing, 0 extra, [1-9]\d* of another shape"),   # 06's 48×48 UNet
    (ConditionalDenoisingUNet(hidden=4), r"0 tensors missing, [1-9]\d* extra, 0 of another shape"),   # 02's
])
def test_another_scripts_unet_is_refused_for_what_it_lacks_without_a_guess(script, tmp_path, model, mismatch):
    cg = script("03_classifier_guidance.py")
    torch.save({"model": model.state_dict(), "args": SCHEDULE, "epoch": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit) as stop:
        cg.load_frozen_unet(tmp_path / "checkpoint.pt", CPU)
    message = str(stop.value)
    assert "is not a checkpoint of 01_ddpm_mnist.py" in message and re.search(mismatch, message), message
    assert not re.search(r"0[2-7]_\w+\.py", message)                   # names no other script


def _u8(shape):
    return np.zeros(shape, dtype=np.uint8)


@pytest.mark.parametrize("arrays, says", [
    ({"images": _u8((40, 28, 28))}, "has no labels, guidance"),                      # 01's samples.npz
    ({"images": _u8((20, 28, 28)), "labels": np.arange(20) % 10, "guidance": np.zeros(19)}, "N guidance values"),
    ({"images": _u8((20, 32, 32)), "labels": np.arange(20) % 10, "guidance": np.zeros(20)}, "N×28×28"),
    ({"images": _u8((20, 28, 28)), "labels": np.arange(20) % 6, "guidance": np.zeros(20)}, "digit(s) [6, 7, 8, 9]"),
    (None, "is not an .npz file"),
])
def test_cfg_samples_is_checked_before_any_work(script, tmp_path, capsys, arrays, says):
    path = tmp_path / "cfg.npz"
    if arrays is None:
        path.write_text("not an npz")
    else:
        np.savez(path, **arrays)
    with pytest.raises(SystemExit) as stop:
        script("03_classifier_guidance.py").main(["--dry-run", "--cfg-samples", str(path),
                                                  "--out-dir", str(tmp_path / "out")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and f"--cfg-samples {path}" in line and says in line, line
    assert not (tmp_path / "out").exists()                              # nothing trained, drawn or written


def test_help_description_is_a_whole_sentence(script, capsys):
    with pytest.raises(SystemExit):
        script("03_classifier_guidance.py").parse_args(["--help"])
    description = " ".join(capsys.readouterr().out.split("\n\n")[1].split())   # the paragraph after usage
    assert description.startswith("Handout A Problem 2: classifier guidance") and description.endswith("."), \
        description
