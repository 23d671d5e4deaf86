"""Long sampling loops, saved part by part, so that Ctrl-C (or a closed laptop) loses one part, not all.

02's guidance sweep draws 1,000 samples at each of six γ; on a 2-core CPU one γ of the handout's
UNet takes about 40 minutes. Each finished part is saved with a key that names everything its
samples depend on (the weights, by hash, and the sampling settings); a later run with the same key
loads the part instead of drawing it again, and any other key draws it afresh.
"""
import hashlib
from pathlib import Path

import torch

from .utils import atomic_save


def state_hash(model):
    """SHA-256 over every parameter and buffer: equal hashes = bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def saved_part(path, key):
    """The value saved at path under exactly this key, else None (missing, other key, unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or damaged file is drawn again, never trusted
        return None
    return saved["value"] if isinstance(saved, dict) and saved.get("key") == key else None


def reuse_or_compute(path, key, compute):
    """compute()'s value (tensors, numbers, dicts of them), saved atomically to path under key;
    if path already holds a value for this key, that value, without calling compute()."""
    value = saved_part(path, key)
    if value is not None:
        print(f"reusing {path} (same weights and settings)", flush=True)
        return value
    value = compute()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"key": key, "value": value}, path)
    return value
