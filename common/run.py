"""The plumbing every script shares: device and precision, atomic writes and the record of what a run wrote,
checkpoints, progress and one-line errors; no algorithm (the run folder itself: common/folders.py). Speed on CUDA
comes from two switches only: channels_last and autocast (bf16 where the GPU has it, else fp16 with a loss
scaler); on a CPU everything runs in plain fp32."""
import csv
import io
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

RECORD = ".written"   # in a run folder, beside config.json: every file this script's runs wrote there, a line each
folder = {"out": None, "args": None, "rewrite": False}   # the run folder written to, its settings: folders.open_run


def fail(message):
    """Stop with a one-line, actionable error instead of a traceback."""
    raise SystemExit(f"error: {message}")


# --- device and precision ---

def pick_device(name="auto"):
    """'auto' -> cuda if there is one, else cpu; resolved once, then passed along."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {name}: this machine has no CUDA GPU (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        fail(f"--device {name} is not a device: use auto, cpu, cuda or cuda:N")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_dtype(device):
    """The autocast dtype: bf16 on a GPU that computes in it (compute capability 8, Ampere, or newer), else fp16
    (a T4 or V100, which would only emulate bf16); None, plain fp32, on a CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def autocast(device):
    """Mixed precision on CUDA; does nothing on a CPU."""
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device):
    """Loss scaling, which only fp16 needs (bf16 has fp32's exponent range); elsewhere it does nothing."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def memory_format(device):
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def to_device(model, device):
    """The model on `device`, in channels_last layout on CUDA."""
    return model.to(device, memory_format=memory_format(device))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def decayed_lr(lr, decay_to, epoch, epochs):
    """Epoch e's learning rate, lr × decay_to^((e − 1)/epochs): from lr down to about lr × decay_to."""
    return lr * decay_to ** ((epoch - 1) / epochs)


def check_finite(x, what, remedy="lower it"):
    """Images that are NaN or inf are no samples: stop rather than save and score them as black pixels."""
    if not torch.isfinite(x).all():
        fail(f"{what} became NaN or inf: {remedy}")


# --- files, written atomically: a crash or Ctrl-C leaves the old file or the whole new one ---

def write_bytes(data, path):
    """Write `path` whole or not at all: a temporary <name>.<pid>.tmp, then a rename. A file of the run folder is
    listed in its record first (folders.py deletes only what the record lists)."""
    path = Path(path)
    record(path)
    replace_whole(data, path)


def replace_whole(data, path):
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # still there only if the write was interrupted


def record(path):
    """Add `path` to the run folder's record, if it lies in that folder. A fresh run never replaces a file there
    that the record does not list: the user's, not the run's (--resume continues the run that wrote the folder,
    and so may rewrite its files)."""
    out = folder["out"]
    if out is None or out not in path.resolve().parents:
        return
    name, names = path.resolve().relative_to(out).as_posix(), written(out)
    if name in names:
        return
    if path.exists() and not folder["rewrite"]:
        fail(f"{path} is not a file that this script's runs wrote: move it out of {out}, then "
             f"{next_step('run the same command again')}")
    replace_whole("".join(f"{n}\n" for n in names + [name]).encode(), out / RECORD)


def written(out):
    """The files that out's record lists, relative to out, in the order they were first written."""
    try:
        return (Path(out) / RECORD).read_text().splitlines()
    except OSError:   # no record yet
        return []


def save_json(obj, path):
    write_bytes((json.dumps(obj, indent=2, default=str) + "\n").encode(), path)


def write_csv(rows, path):
    """rows[0] is the header."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_bytes(text.getvalue().encode(), path)


def save_npz(path, **arrays):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(buffer.getvalue(), path)


def save_losses_csv(history, path):
    """losses.csv: one row per batch, with its epoch and step."""
    rows, step = [["epoch", "step", "batch_loss"]], 0
    for epoch, losses in enumerate(history["batch"], start=1):
        for loss in losses:
            step += 1
            rows.append([epoch, step, f"{loss:.6f}"])
    write_csv(rows, path)


# --- checkpoints: one dict per trained model, written atomically ---

def save_checkpoint(path, args, **state):
    """Save `state` (modules, optimisers and scalers as their state_dicts; epoch, history, ...) and the run's
    args (a Namespace or a dict) in one dict, atomically."""
    state = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save({**state, "args": args if isinstance(args, dict) else vars(args)}, buffer)
    write_bytes(buffer.getvalue(), path)


def read_checkpoint(path):
    """A checkpoint of save_checkpoint, read to the CPU; a one-line error for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        fail(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated, not a torch file, a pickled model, ...
        fail(f"{path} is damaged or not a checkpoint of these scripts ({type(e).__name__}); delete it, or use "
             f"another --out-dir")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("args"), dict):
        fail(f"{path} is not a checkpoint of these scripts (no settings saved in it); use another --out-dir")
    return ckpt


def load_checkpoint(path, **modules):
    """Restore each named module, optimiser or scaler from `path`, read to the CPU (models copy it into their own
    parameters; optimisers move their state to theirs, but keep Adam's `step` on the CPU: no sync per step)."""
    ckpt = read_checkpoint(path)
    for name, module in modules.items():
        try:
            if ckpt[name] or not isinstance(module, torch.amp.GradScaler):   # an unused scaler saved {}
                module.load_state_dict(ckpt[name])
        except (KeyError, RuntimeError, ValueError) as e:   # missing, other shapes, other parameter groups
            fail(f"{path}: its {name} does not fit this run ({type(e).__name__}); use another --out-dir")
    return ckpt


def load_part(path, key):
    """Images saved by save_part under exactly this key (a dict of plain facts), else None: not drawn yet, drawn
    for other settings, or damaged (then said in one line, and drawn again)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path) as saved:
            return saved["images"] if json.loads(str(saved["key"])) == key else None
    except Exception as e:   # truncated or not an .npz: numpy and zipfile raise many types
        print(f"note: {path} is damaged ({type(e).__name__}): it is drawn again", flush=True)
        return None


def save_part(path, key, images):
    Path(path).parent.mkdir(exist_ok=True)
    save_npz(path, images=images, key=json.dumps(key, default=str))
    return images


# --- progress, and what a run that stops leaves ---

class Progress:
    """A progress line with images/s and ETA. Each step's losses stay on the device; every `check` steps
    they are looked at once (one host sync), and a loss that is not finite stops the run (`lr_flag`: the
    learning rate to lower)."""

    def __init__(self, total_steps, prefix, every=10.0, check=50, lr_flag="--lr"):
        self.total, self.prefix, self.every, self.check, self.lr_flag = total_steps, prefix, every, check, lr_flag
        self.start = self.printed = time.time()
        self.steps = self.images = 0
        self.values = {}   # name -> list of scalar tensors

    def step(self, n_images, **losses):
        self.steps, self.images = self.steps + 1, self.images + n_images
        for name, loss in losses.items():
            if loss is not None:   # e.g. no G loss on a critic-only step
                self.values.setdefault(name, []).append(loss.detach().float())
        if self.steps % self.check and self.steps != self.total:
            return
        recent = {name: torch.stack(v[-self.check:]).mean().item() for name, v in self.values.items()}
        for name, value in recent.items():
            if not math.isfinite(value) or abs(value) > 1e6:
                fail(f"{self.prefix}: the {name} became {value:.4g} at step {self.steps}; {self.restart()}")
        now = time.time()
        if now - self.printed >= self.every or self.steps == self.total:
            self.printed, elapsed = now, max(now - self.start, 1e-9)
            eta = elapsed / self.steps * (self.total - self.steps)
            shown = "  ".join(f"{name} {value:.4f}" for name, value in recent.items())
            print(f"{self.prefix} step {self.steps}/{self.total}  {self.images / elapsed:,.1f} img/s  "
                  f"elapsed {clock(elapsed)}  ETA {clock(eta)}  {shown}", flush=True)

    def restart(self):
        """After a blow-up: a lower learning rate, which --resume would not take (it keeps the run's settings)."""
        saved = saved_checkpoints()
        if not saved:
            return f"run the same command again with a lower {self.lr_flag} (no checkpoint was saved yet)"
        return (f"start afresh with a lower {self.lr_flag} and --overwrite ({', '.join(saved)} is intact, but "
                f"--resume would keep its {self.lr_flag})")

    def losses(self, name="loss"):
        """Every step's loss under `name`, as a list of floats."""
        return torch.stack(self.values[name]).cpu().tolist() if self.values.get(name) else []


def clock(seconds):
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def to_go(done, total, unit="epochs"):
    """'epochs 4..10' for a run that has `done` of them; 'all 3 epochs trained' when --resume finds none left."""
    return f"{unit} {done + 1}..{total}" if done < total else f"all {total} {unit} trained"


def saved_checkpoints():
    """The names of the checkpoints in the run folder at this moment (none before it is opened)."""
    return sorted(path.name for path in folder["out"].glob("checkpoint*.pt")) if folder["out"] else []


def next_step(again):
    """The step that works after a stop, by what the run folder holds now: --resume, or `again` if no checkpoint
    was saved (a fresh start replaces only what this script's runs wrote there)."""
    if folder["out"] is None:
        return f"{again} (nothing was written)"
    saved = saved_checkpoints()
    if not saved:
        return f"{again} (no checkpoint was saved yet)"
    return (f"add --resume to the same command to continue from {', '.join(saved)} (every file written is "
            f"complete)")
