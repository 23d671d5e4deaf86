"""The CUDA-only 'optimised' path, forced on the CPU: every script's dry run under autocast + channels_last.

On CUDA the scripts train and sample in channels_last under autocast (bf16, or fp16 with a GradScaler on
GPUs without bf16); on a CPU they run plain fp32, so CI would never see a dtype or layout mismatch that
only the GPU path has (a bf16 output indexed into an fp32 buffer, a scaler step on the wrong loss, ...).
CPU autocast takes bf16 and fp16 too, so here the switches in common/utils.py are replaced, in every
loaded module, by ones that turn the optimised path on for the CPU.
"""
import json
import math
import sys

import pytest
import torch

import common.utils
from conftest import load_script

SCRIPTS = ["01_ddpm_mnist.py", "02_cfg_mnist.py", "03_classifier_guidance.py", "04_dcgan_wgan.py",
           "05_cgan_wgangp_fid.py", "06_faces.py", "07_afhq_cosine.py"]


class OptimisedOnCPU:
    """Stand-ins for common.utils' precision switches that take the CUDA branch on the CPU too."""

    def __init__(self, dtype):
        self.dtype, self.autocasts = dtype, 0

    def amp_dtype(self, device):
        return self.dtype if common.utils._cuda_speedups else None   # the benchmark's 'plain' mode stays fp32

    def autocast(self, device):
        self.autocasts += self.amp_dtype(device) is not None
        dtype = self.amp_dtype(device)
        return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def memory_format(self, device):
        return torch.channels_last if common.utils._cuda_speedups else torch.contiguous_format

    def to_device(self, model, device):
        return model.to(device, memory_format=self.memory_format(device))

    def make_grad_scaler(self, device):
        return torch.amp.GradScaler("cpu", enabled=self.amp_dtype(device) == torch.float16)


def force_optimised(monkeypatch, script, dtype):
    """Patch the switches into the script and every common module that imported them by name."""
    forced = OptimisedOnCPU(dtype)
    modules = [script] + [m for name, m in sys.modules.items() if name.startswith("common") and m is not None]
    for module in modules:
        for name in ("amp_dtype", "autocast", "memory_format", "to_device", "make_grad_scaler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(forced, name))
    return forced


def assert_all_finite(out):
    """Every number in the metrics and every float tensor in the checkpoints is finite."""
    def numbers(obj):
        if isinstance(obj, dict):
            return [x for v in obj.values() for x in numbers(v)]
        if isinstance(obj, list):
            return [x for v in obj for x in numbers(v)]
        return [obj] if isinstance(obj, float) else []
    metrics = [x for path in out.rglob("metrics.json") for x in numbers(json.loads(path.read_text()))]
    assert metrics and all(math.isfinite(x) for x in metrics)
    for path in out.rglob("*.pt"):
        state = torch.load(path, weights_only=False)
        for part in ("model", "G", "D"):
            for name, tensor in state.get(part, {}).items():
                assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{path}: {part}.{name}"


@pytest.mark.parametrize("name, dtype", [(name, torch.bfloat16) for name in SCRIPTS] + [
    ("01_ddpm_mnist.py", torch.float16),       # the GradScaler in common/train.py (01, 02, 03, 06)
    ("04_dcgan_wgan.py", torch.float16),       # ... in common/gan_train.py (04, 05)
    ("07_afhq_cosine.py", torch.float16),      # ... in 07's own loop
])
def test_dry_run_on_the_optimised_path(name, dtype, tmp_path, monkeypatch):
    script = load_script(name)
    forced = force_optimised(monkeypatch, script, dtype)
    script.main(["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert forced.autocasts > 0                 # the forced branch really ran
    assert (tmp_path / "config.json").is_file()
    assert_all_finite(tmp_path)
