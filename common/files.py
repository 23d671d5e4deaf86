"""Files written atomically: each goes to a temporary file, then is renamed over the old one, so a crash
or Ctrl-C leaves either the old file or the whole new one, never half of it (checkpoints, samples,
tables, figures)."""
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch


def write_bytes(data, path):
    """Write to a temporary file, then rename: the file is either the old one or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: no two writers share it
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if the write was interrupted


def write_text(text, path):
    """UTF-8 text (γ, φ in the tables), newlines as given, written atomically."""
    write_bytes(text.encode("utf-8"), path)


def write_csv(rows, path):
    """rows[0] is the header; written atomically."""
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_text(text.getvalue(), path)


def save_json(obj, path):
    write_text(json.dumps(obj, indent=2, default=str) + "\n", path)


def save_npz(path, **arrays):
    """np.savez_compressed, written atomically (samples.npz and friends)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(buffer.getvalue(), path)


def atomic_save(obj, path):
    """torch.save, written atomically: a crash never leaves half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(buffer.getvalue(), path)
