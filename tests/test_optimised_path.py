"""The CUDA-only path, forced on the CPU: dry runs under autocast (bf16, or fp16 with a grad scaler) and
channels_last. On CUDA the scripts run that way; on a CPU they run plain fp32, so CI would otherwise never see
a dtype or layout mismatch that only the GPU path has (a bf16 output written into an fp32 buffer, a scaler
step on the wrong loss, ...). CPU autocast takes bf16 and fp16 too, so the switches in common/run.py are
replaced, in every module that imported them by name, by ones that take the CUDA branch on the CPU. fp16
arithmetic on a CPU is emulated and far too slow for a test suite (seconds per step), so the fp16 path's one
difference, the loss scaler, is run here under bf16 autocast."""
import json

import pytest
import torch

import common.judge
import common.run
import common.samplers
from conftest import load_script


class OptimisedOnCPU:
    """Stand-ins for common.run's precision switches that take the CUDA branch on the CPU too."""

    def __init__(self, scaler):
        self.scaler, self.uses = scaler, 0

    def amp_dtype(self, device):
        self.uses += 1
        return torch.bfloat16

    def memory_format(self, device):
        return torch.channels_last

    def grad_scaler(self, device):   # the real one asks for a CUDA scaler, which a CPU turns off
        return torch.amp.GradScaler("cpu", enabled=self.scaler)


def force_optimised(monkeypatch, script, scaler=False):
    switches = OptimisedOnCPU(scaler)
    for module in (common.run, common.samplers, common.judge, script):
        for name in ("amp_dtype", "memory_format", "grad_scaler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(switches, name))
    return switches


@pytest.mark.parametrize("name,scaler,flags", [
    ("01_ddpm_mnist.py", False, []),
    ("02_cfg_mnist.py", True, ["--sweep", "0", "5", "--per-class", "1"]),
])
def test_dry_run_on_the_optimised_path(name, scaler, flags, tmp_path, monkeypatch):
    script = load_script(name)
    switches = force_optimised(monkeypatch, script, scaler)
    script.main(["--dry-run", "--out-dir", str(tmp_path)] + flags)
    assert switches.uses > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    values = [metrics["fd_judge_vs_mnist_test"]] if name.startswith("01") else \
        [r["fd_judge"] for r in metrics["per_guidance"]]
    assert all(v == v and v >= 0 for v in values)                 # finite numbers, not NaN


def test_resume_continues_exactly_with_the_loss_scaler(tmp_path, monkeypatch):
    script = load_script("01_ddpm_mnist.py")
    force_optimised(monkeypatch, script, scaler=True)
    script.main(["--dry-run", "--out-dir", str(tmp_path / "straight"), "--n-samples", "4"])
    script.main(["--dry-run", "--out-dir", str(tmp_path / "split"), "--epochs", "1", "--n-samples", "4"])
    script.main(["--dry-run", "--out-dir", str(tmp_path / "split"), "--resume", "--n-samples", "4"])
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("straight", "split"))
    assert a["scaler"]["scale"] == b["scaler"]["scale"] > 0         # the loss scale is restored too
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
