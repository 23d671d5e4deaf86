"""The CUDA-only 'optimised' path, forced on the CPU: every script's dry run under autocast + channels_last.

On CUDA the scripts train and sample in channels_last under autocast (bf16, or fp16 with a GradScaler on
GPUs without bf16); on a CPU they run plain fp32, so CI would never see a dtype or layout mismatch that
only the GPU path has (a bf16 output indexed into an fp32 buffer, a scaler step on the wrong loss, ...).
CPU autocast takes bf16 and fp16 too, so here the switches in common/utils.py are replaced, in every
loaded module, by ones that turn the optimised path on for the CPU.
"""
import argparse
import importlib
import json
import math
import pkgutil
import sys

import pytest
import torch

import common
import common.train as train
import common.utils
from common.data import synthetic_dataset
from common.schedules import ddpm_schedule
from common.train_state import start_training
from common.unet import DenoisingUNet
from conftest import load_script

SCRIPTS = ["01_ddpm_mnist.py", "02_cfg_mnist.py", "03_classifier_guidance.py", "04_dcgan_wgan.py",
           "05_cgan_wgangp_fid.py", "06_faces.py", "07_afhq_cosine.py"]
# Smaller sweeps than the dry runs' own, with every kind of row still drawn (unguided and guided). A CPU
# without bf16/fp16 arithmetic (AVX2 only) emulates autocast, 5x slower than fp32; run alone there, back
# to back, this file took 121.6 s without these flags and 94.5 s with them (BENCHMARKS.md, "A slower 2-core
# machine").
SMALLER = {"02_cfg_mnist.py": ["--sweep", "0", "5", "--eval-per-class", "1"],
           "03_classifier_guidance.py": ["--scales", "0", "5", "--digits", "1", "7", "--per-class", "2"],
           "06_faces.py": ["--n-samples", "8", "--per-age", "2"]}


class OptimisedOnCPU:
    """Stand-ins for common.utils' precision switches that take the CUDA branch on the CPU too. The real
    autocast() and to_device() read these two switches, so they need no stand-ins of their own."""

    def __init__(self, dtype):
        self.dtype, self.uses = dtype, 0

    def amp_dtype(self, device):
        if not common.utils._cuda_speedups:   # the benchmark's 'plain' mode stays fp32
            return None
        self.uses += 1
        return self.dtype

    def memory_format(self, device):
        return torch.channels_last if common.utils._cuda_speedups else torch.contiguous_format

    def make_grad_scaler(self, device):   # the real one asks for a CUDA scaler, which a CPU turns off
        return torch.amp.GradScaler("cpu", enabled=common.utils._cuda_speedups and self.dtype == torch.float16)


def force_optimised(monkeypatch, script, dtype):
    """Patch the switches into the script and every common module that imported them by name. Every common
    module is imported first, so none is first imported (and left holding a switch) while patched."""
    for module in pkgutil.iter_modules(common.__path__):
        importlib.import_module(f"common.{module.name}")
    forced = OptimisedOnCPU(dtype)
    modules = [script] + [m for name, m in sys.modules.items()
                          if (name == "common" or name.startswith("common.")) and m is not None]
    for module in modules:
        for name in ("amp_dtype", "memory_format", "make_grad_scaler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(forced, name))
    return forced


def floats(obj):
    """Every float in a JSON value."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in floats(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in floats(v)]
    return [obj] if isinstance(obj, float) else []


def checkpoint_tensors(out):
    """(checkpoint, network part, name, tensor) for every network tensor in out's checkpoints."""
    for path in sorted(out.rglob("*.pt")):
        state = torch.load(path, weights_only=False)
        for part in ("model", "G", "D"):
            for name, tensor in state.get(part, {}).items():
                yield path, part, name, tensor


def scaler_states(out):
    """Every GradScaler state saved in out's checkpoints ('scaler', 'scaler_G', 'scaler_D')."""
    states = [torch.load(path, weights_only=False) for path in sorted(out.rglob("*.pt"))]
    return [value for state in states for key, value in state.items() if key.startswith("scaler")]


@pytest.mark.parametrize("name, dtype", [(name, torch.bfloat16) for name in SCRIPTS] + [
    ("04_dcgan_wgan.py", torch.float16),       # the GradScaler in common/gan_train.py (04, 05)
    ("07_afhq_cosine.py", torch.float16),      # ... in 07's own loop; common/train.py's: the resume test below
])
def test_dry_run_on_the_optimised_path(name, dtype, tmp_path, monkeypatch):
    script = load_script(name)
    forced = force_optimised(monkeypatch, script, dtype)
    script.main(["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path)] + SMALLER.get(name, []))
    assert forced.uses > 0                                         # the forced precision really ran
    metrics = [x for path in tmp_path.rglob("metrics.json") for x in floats(json.loads(path.read_text()))]
    assert metrics and all(math.isfinite(x) for x in metrics)
    tensors = list(checkpoint_tensors(tmp_path))
    for path, part, tensor_name, tensor in tensors:
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{path}: {part}.{tensor_name}"
    # the networks trained in channels_last (a conv weight with C_in > 1 is then not NCHW-contiguous)
    assert any(t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
               for *_, t in tensors)
    # fp16 needs the scaler, and it ran: its saved state holds a scale (bf16 and fp32 save an empty one)
    states = scaler_states(tmp_path)
    assert states and all(bool(state) == (dtype == torch.float16) for state in states)


def test_resume_continues_exactly_on_the_fp16_path(tmp_path, monkeypatch):
    """Stopped after epoch 1 (as Ctrl-C would) and resumed equals 2 straight epochs under fp16 autocast:
    the weights, and the GradScaler's state (one not restored would restart its growth count)."""
    force_optimised(monkeypatch, train, torch.float16)
    args = argparse.Namespace(epochs=2, batch_size=32, lr=1e-3, lr_decay_to=0.1, seed=0, hidden=8, T=20)
    x, sched = synthetic_dataset(96)[0], ddpm_schedule(20)
    runs = {}
    for run in ("straight", "resumed"):
        (tmp_path / run).mkdir()
        torch.manual_seed(123)
        runs[run] = start_training(DenoisingUNet(hidden=8), args, torch.device("cpu"), tmp_path / run / "checkpoint.pt",
                                   resume=False)
        for _ in train.run_epochs(runs[run], train.ddpm_loss, {"x0": x}, sched=sched):
            if run == "resumed":
                break                                           # stop after epoch 1
    torch.manual_seed(123)
    resumed = start_training(DenoisingUNet(hidden=8), args, torch.device("cpu"), tmp_path / "resumed" / "checkpoint.pt",
                             resume=True)
    list(train.run_epochs(resumed, train.ddpm_loss, {"x0": x}, sched=sched))
    straight = runs["straight"]
    assert straight.scaler.is_enabled() and straight.scaler.state_dict() == resumed.scaler.state_dict()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name

