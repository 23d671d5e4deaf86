"""Small utilities every script uses: device, precision, seeding, errors, the run's setup, progress.
(Files written atomically are in files.py.)

Speed on CUDA comes from two switches only (the design card): channels_last memory
format and autocast (bf16 where the GPU supports it, else fp16 with a grad scaler).
On CPU everything runs in plain fp32.
"""
import contextlib
import math
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .files import save_json


def fail(message):
    """Stop with a one-line, actionable error instead of a traceback."""
    raise SystemExit(f"error: {message}")


def resolve_device(name="auto"):
    """'auto' -> cuda if available, else cpu. Resolved once, then passed along."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {name} asked for, but this machine has no CUDA GPU (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        fail(f"--device {name} is not a device: use auto, cpu, cuda or cuda:N")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- precision: channels_last + autocast on CUDA, fp32 on CPU ---

_cuda_speedups = True   # switched off only by cuda_speedups(False), the benchmark's 'plain' mode


@contextlib.contextmanager
def cuda_speedups(enabled):
    """Within the block, CUDA uses channels_last + autocast (True) or plain fp32 NCHW (False)."""
    global _cuda_speedups
    before, _cuda_speedups = _cuda_speedups, enabled
    try:
        yield
    finally:
        _cuda_speedups = before


def amp_dtype(device):
    if device.type != "cuda" or not _cuda_speedups:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device):
    """Mixed precision on CUDA; a no-op context on CPU."""
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def make_grad_scaler(device):
    """A grad scaler is needed for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def load_grad_scaler(scaler, state):
    """Restore a grad scaler from a checkpoint. One saved where none was needed (CPU, or a bf16 GPU) is empty:
    an fp16 GPU (a T4, say) resuming that run starts from a fresh scale instead of stopping."""
    if state:
        scaler.load_state_dict(state)


def memory_format(device):
    return torch.channels_last if device.type == "cuda" and _cuda_speedups else torch.contiguous_format


def to_device(model, device):
    """Move a model to `device`, in channels_last layout on CUDA."""
    return model.to(device, memory_format=memory_format(device))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- output folder, config, checkpoints ---

def default_eval_batch(device):
    """Samples drawn per batch when --eval-batch is not given: 1,000 on CUDA; 100 on a CPU, where
    batches of 100 sampled 1.7× faster than batches of 1,000 (BENCHMARKS.md)."""
    return 1000 if device.type == "cuda" else 100


def start_run(args, script):
    """A script's setup: resolve the device (and --eval-batch's default for it), seed everything, make
    the output folder, write config.json. Returns (device, out).

    With --resume, config.json is left alone here: the script calls save_config once the checkpoint has
    been accepted, so a rejected --resume (another --hidden, say) keeps the config of the run it names."""
    device = resolve_device(args.device)
    if "eval_batch" in vars(args) and args.eval_batch is None:     # --eval-batch not given
        args.eval_batch = default_eval_batch(device)
    seed_everything(args.seed)
    out = make_out_dir(args.out_dir, script, getattr(args, "dry_run", False))
    if not getattr(args, "resume", False):
        save_config(args, out)
    return device, out


def save_config(args, out):
    """config.json: every setting of this run, as parsed."""
    save_json(vars(args), out / "config.json")


def make_out_dir(out_dir, script_file, dry_run=False):
    """results/<script stem>/ unless --out-dir says otherwise; created on demand. A --dry-run's tiny
    models go to its subfolder dry-run/, where no real run (03, 05) would pick them up."""
    default = Path("results", Path(script_file).stem, *(["dry-run"] if dry_run else []))
    path = Path(out_dir) if out_dir else default
    if path.exists() and not path.is_dir():
        fail(f"--out-dir {path} is a file, not a folder: name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # no permission, a read-only disk, a parent that is a file, ...
        fail(f"--out-dir {path}: cannot create it ({e.strerror}); name a folder you can write to")
    return path


def load_checkpoint(path, device="cpu", missing_hint="train first, or drop --resume"):
    """Load a checkpoint written by atomic_save, with a one-line error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        fail(f"checkpoint {path} does not exist ({missing_hint})")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        fail(f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({type(e).__name__}); "
             f"delete it and train again")


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible(hint):
    """Ctrl-C, or SIGTERM (`kill`, a cluster's time limit), inside the block ends the run with one line,
    "interrupted: <hint>", and exit status 130 instead of a traceback. Training loops use it around
    their epochs (everything up to the last checkpoint is kept, and `hint` says how to continue), and
    each numbered script around main(). Nested, the innermost block's hint is the one printed."""
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        print(f"\ninterrupted: {hint}", file=sys.stderr, flush=True)
        raise SystemExit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_finite(loss_value, where, step):
    """A NaN/inf loss stops training with a clear message (it never recovers by itself)."""
    if not math.isfinite(loss_value):
        fail(f"loss became {loss_value} in {where}, step {step}; "
             f"try a lower --lr (the last checkpoint is still intact)")


class Progress:
    """A one-line progress report with images/s and ETA, printed every `every` seconds."""

    def __init__(self, total_steps, prefix="", every=10.0, stream=None):
        self.total, self.prefix, self.every, self.stream = total_steps, prefix, every, stream
        self.start = self.last = time.time()
        self.images = self.step = 0

    def update(self, step, n_images, extra=""):
        self.images, self.step = self.images + n_images, step
        now = time.time()
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / max(step, 1) * (self.total - step)
        print(f"{self.prefix} step {step}/{self.total}  {format_rate(self.images / elapsed)} img/s  "
              f"elapsed {format_seconds(elapsed)}  ETA {format_seconds(eta)}  {extra}",
              file=self.stream or sys.stdout, flush=True)


def format_rate(per_second):
    """1234.5 -> '1,234'; 0.297 -> '0.3' (slow guided sampling on a CPU is well under 1 image/s)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def format_seconds(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
