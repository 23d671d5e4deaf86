"""The plumbing every script shares: device and precision, the run folder, checkpoints, atomic writes, progress
and one-line errors; no algorithm. Speed on CUDA comes from two switches only: channels_last and autocast (bf16
where the GPU has it, else fp16 with a loss scaler); on a CPU everything runs in plain fp32."""
import atexit
import contextlib
import csv
import io
import json
import math
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUTPUT_SUFFIXES = {".png", ".csv", ".json", ".npz", ".pt", ".md"}   # what a run writes (--overwrite clears them)
opened = []   # the run folders this process opened, newest last (the Ctrl-C line names what they hold)


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
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # still there only if the write was interrupted


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


# --- the run folder ---

def open_run(args, script_file, match=()):
    """The run's output folder, made ready once the inputs have been read: results/<script>/ (…_quick/ for
    --quick, …_dry_run/ for --dry-run) unless --out-dir names one. Nothing is written before these checks:
      - --resume needs the earlier run's checkpoints there, trained with the same `match` settings;
      - a fresh run refuses a folder that holds a checkpoint, unless --overwrite (or a --dry-run over an earlier
        dry run), and then clears the old run's outputs first;
      - one run at a time writes there: a lock file names its pid. Then config.json records the settings."""
    args.script = Path(script_file).stem
    preset = "_quick" if args.quick else "_dry_run" if args.dry_run else ""
    out = Path(args.out_dir) if args.out_dir else Path("results", args.script + preset)
    if out.exists() and not out.is_dir():
        fail(f"--out-dir {out} is a file, not a folder: name a folder")
    checkpoints = sorted(out.glob("checkpoint*.pt"))
    if args.resume:
        if not checkpoints:
            fail(f"--resume: there is no checkpoint in {out} to continue; start without --resume")
        for path in checkpoints:
            check_resumable(path, args, match)
    elif checkpoints and not args.overwrite and not (args.dry_run and all(
            read_checkpoint(path)["args"].get("dry_run") for path in checkpoints)):   # a dry run replaces a dry run
        fail(f"{out} holds an earlier run ({checkpoints[0].name}): add --resume to continue it, --out-dir to "
             f"start in another folder, or --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        take_lock(out)
    except OSError as e:   # no permission, a read-only disk, a parent that is a file, ...
        fail(f"--out-dir {out}: cannot write there ({e.strerror}); name a folder you can write to")
    if not args.resume:
        clear_outputs(out, args.script)
    save_json(vars(args), out / "config.json")
    opened.append(out)
    return out


def check_resumable(path, args, match):
    """A checkpoint --resume may continue: this script's, trained with the same `match` settings, and not
    past --epochs (or --train-steps)."""
    ckpt = read_checkpoint(path)
    saved = ckpt["args"]
    if saved.get("script") != args.script:
        fail(f"{path} was written by {saved.get('script', 'another program')}, not {args.script}; "
             f"use another --out-dir")
    for name in match:
        if saved.get(name) != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            fail(f"{path} was trained with {flag} {saved.get(name)}, not {getattr(args, name)}: pass the same "
                 f"value to continue it, or use another --out-dir")
    bound = ckpt.get("bound", "epochs")             # the flag that counts what it trained
    done = ckpt.get("epoch", ckpt.get("step", 0))
    if done > getattr(args, bound):
        flag = "--" + bound.replace("_", "-")
        fail(f"{path} has trained {done} {bound.split('_')[-1]}, more than {flag} {getattr(args, bound)}: pass "
             f"{flag} {done} or more, or use another --out-dir")


def clear_outputs(out, script):
    """Remove what an earlier run of this script wrote in `out` (its outputs, by suffix, and sweep/), only if
    its config.json says it was this script's folder: --overwrite never empties a folder of other files."""
    try:
        ours = json.loads((out / "config.json").read_text()).get("script") == script
    except (OSError, ValueError, AttributeError):
        ours = False
    for path in list(out.iterdir()) if ours else []:
        if path.is_file() and path.suffix in OUTPUT_SUFFIXES:
            path.unlink()
        elif path.is_dir() and path.name == "sweep":
            for part in path.iterdir():
                part.unlink()
            path.rmdir()


def take_lock(out):
    """One run at a time per folder: out/.lock holds 'pid host'. A lock of a process that is gone (or of
    another machine, e.g. an earlier Colab runtime) is taken over; a live one stops this run."""
    lock = out / ".lock"
    pid, _, host = lock.read_text().partition(" ") if lock.is_file() else ("", "", "")
    if host.strip() == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and alive(int(pid)):
        fail(f"another run (pid {pid}) is writing to {out}: wait for it to end, or use another --out-dir "
             f"(if no run is, delete {lock})")
    lock.write_text(f"{os.getpid()} {socket.gethostname()}")
    atexit.register(release_lock, lock)


def alive(pid):
    if os.name == "nt":             # Windows has no signal 0 to ask with: the message says how to clear the lock
        return True
    try:
        os.kill(pid, 0)             # signal 0: is that process still there?
    except ProcessLookupError:
        return False
    except OSError:                 # another user's process
        pass
    return True


def release_lock(lock):
    with contextlib.suppress(OSError):
        if lock.read_text().split(" ")[0] == str(os.getpid()):
            lock.unlink()


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
    """Images saved by save_part under exactly this key (a dict of plain facts), else None."""
    try:
        with np.load(path) as saved:
            if json.loads(str(saved["key"])) == key:
                return saved["images"]
    except (OSError, KeyError, ValueError):   # not there yet, or damaged: drawn again
        pass
    return None


def save_part(path, key, images):
    Path(path).parent.mkdir(exist_ok=True)
    save_npz(path, images=images, key=json.dumps(key, default=str))
    return images


# --- progress, and Ctrl-C ---

class Progress:
    """A progress line with images/s and ETA. Each step's losses stay on the device; every `check` steps
    they are looked at once (one host sync), and a loss that is not finite stops the run."""

    def __init__(self, total_steps, prefix, every=10.0, check=50):
        self.total, self.prefix, self.every, self.check = total_steps, prefix, every, check
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
                fail(f"{self.prefix}: the {name} became {value:.4g} at step {self.steps}; try a lower --lr "
                     f"(the last checkpoint is intact)")
        now = time.time()
        if now - self.printed >= self.every or self.steps == self.total:
            self.printed, elapsed = now, max(now - self.start, 1e-9)
            eta = elapsed / self.steps * (self.total - self.steps)
            shown = "  ".join(f"{name} {value:.4f}" for name, value in recent.items())
            print(f"{self.prefix} step {self.steps}/{self.total}  {self.images / elapsed:,.1f} img/s  "
                  f"elapsed {clock(elapsed)}  ETA {clock(eta)}  {shown}", flush=True)

    def losses(self, name="loss"):
        """Every step's loss under `name`, as a list of floats."""
        return torch.stack(self.values[name]).cpu().tolist() if self.values.get(name) else []


def clock(seconds):
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


@contextlib.contextmanager
def on_interrupt():
    """Ctrl-C (or SIGTERM) ends the run with one line saying what is saved, and exit status 130."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # which raises KeyboardInterrupt
    try:
        yield
    except KeyboardInterrupt:
        print(f"\ninterrupted: {saved_note()}", file=sys.stderr, flush=True)
        raise SystemExit(130)


def saved_note():
    """What an interrupted run leaves, read from its folder at that moment."""
    checkpoints = sorted(opened[-1].glob("checkpoint*.pt")) if opened else []
    if not checkpoints:
        return "no checkpoint was saved yet: run the same command again"
    names = ", ".join(path.name for path in checkpoints)
    return f"every file written is complete; add --resume to the same command to continue from {names}"
