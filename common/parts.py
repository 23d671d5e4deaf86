"""Long loops saved part by part, so that Ctrl-C (or a closed laptop) loses one part, not all
(also 07's decoded AFHQ cache, keyed by its file list, and its training images' FID statistics).

02's guidance sweep draws 1,000 samples at each of six γ; on a 2-core CPU one γ of the handout's
UNet takes about 40 minutes. Each finished part is saved with a key that names what its samples
depend on: the weights (by hash), the sampling settings, the device's precision, the torch version,
and the source files that draw them (by hash, taken when the script is imported, so the hash is of
the code that runs even if a file is edited mid-run). A later run with the same key loads the part
instead of drawing it again; any other key draws it afresh.

    part = load_part(path, key)
    if part is None:
        part = save_part(path, key, draw())
"""
import hashlib
import inspect
from pathlib import Path

import torch

from .files import atomic_save


def state_hash(model):
    """SHA-256 over every parameter and buffer: equal hashes = bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tensor_hash(x):
    """SHA-256 of a tensor's values, shape and dtype: equal hashes = the same data."""
    x = x.detach().cpu().contiguous()
    return hashlib.sha256(f"{tuple(x.shape)} {x.dtype}".encode() + x.numpy().tobytes()).hexdigest()


def source_hash(*code):
    """SHA-256 of the source of these modules, classes, functions or file paths: changes when any of
    them is edited. Call it at import time (a module constant) to hash the code that is running."""
    h = hashlib.sha256()
    for obj in code:
        h.update(Path(obj).read_bytes() if isinstance(obj, (str, Path)) else inspect.getsource(obj).encode())
    return h.hexdigest()


def load_part(path, key):
    """The value saved at path under exactly this key, else None; says which, in one line."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or damaged file is drawn again, never trusted
        print(f"{path} is unreadable: making it again", flush=True)
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or "value" not in saved:
        print(f"{path} was saved from other inputs (weights, settings, code or files): making it again", flush=True)
        return None
    print(f"reusing {path} (saved by an earlier run from the same inputs)", flush=True)
    return saved["value"]


def save_part(path, key, value):
    """Save value (tensors, numbers, strings, lists and dicts of them) atomically under key; return it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"key": key, "value": value}, path)
    return value
