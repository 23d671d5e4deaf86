"""Handout C's face data: load and validate the course files, convert UTKFace crops, and synthetic faces.

Face files (the rule `load_faces` enforces, one-line errors otherwise):
    faces: .npy or .npy.gz, shape (N, 48, 48) grayscale or (N, 48, 48, 3) RGB;
           uint8 (0–255), or another integer type within 0–255, or float: values in [0, 1]
           if the maximum is <= 1, else in [0, 255] (NaN/inf and negative values rejected).
    ages:  .npy, shape (N,) (or (N, 1)), any integer or float type, finite; same N as faces.
Ages < 0 (missing) or > 100 (likely wrong) are kept for the DDPM and dropped for the regressor.
"""
import gzip
import io
import re
from pathlib import Path

import numpy as np
import torch

from .data import from_uint8
from .files import write_bytes
from .utils import fail

SIZE = 48
AGE_MIN, AGE_MAX = 0, 100


def read_array(path, what):
    """np.load of a .npy or gzipped .npy file, with a one-line error if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        fail(f"{what} file {path} not found: put the course file there (or pass --{what} PATH), "
             f"convert UTKFace crops with --from-utkface DIR, or try --dry-run")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:  # BadGzipFile, ValueError (pickled/truncated), EOFError, ...
        fail(f"{what} file {path} is not a readable .npy{'.gz' if path.suffix == '.gz' else ''} "
             f"array ({type(e).__name__})")


def faces_to_unit(faces, path):
    """Validate a faces array (see the module docstring) and return it as float32 in [0, 1]."""
    expected = f"expected (N, {SIZE}, {SIZE}) grayscale or (N, {SIZE}, {SIZE}, 3) RGB"
    if not (faces.ndim in (3, 4) and faces.shape[1:3] == (SIZE, SIZE)
            and (faces.ndim == 3 or faces.shape[3] == 3)) or len(faces) == 0:
        fail(f"{path}: faces have shape {faces.shape}, {expected}")
    if not (np.issubdtype(faces.dtype, np.integer) or np.issubdtype(faces.dtype, np.floating)):
        fail(f"{path}: faces have dtype {faces.dtype}, expected uint8 (0–255) or float")
    lo, hi = float(faces.min()), float(faces.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 255):
        fail(f"{path}: face values span [{lo}, {hi}], expected 0–255 (uint8) or [0, 1] / [0, 255] (float)")
    # integers are always 0–255; floats are [0, 1] when their maximum is <= 1, else [0, 255]
    scale = 1.0 if np.issubdtype(faces.dtype, np.floating) and hi <= 1.0 else 255.0
    return faces.astype(np.float32) / scale


def load_faces(faces_path, ages_path, device="cpu"):
    """(x, ages): x float32 (N, C, 48, 48) in [-1, 1] (C = 1 or 3), ages float32 (N,), both on `device`."""
    faces = faces_to_unit(read_array(faces_path, "faces"), faces_path)
    ages = read_array(ages_path, "ages")
    if ages.ndim == 2 and ages.shape[1] == 1:
        ages = ages[:, 0]
    if ages.ndim != 1 or not (np.issubdtype(ages.dtype, np.integer) or np.issubdtype(ages.dtype, np.floating)):
        fail(f"{ages_path}: ages have shape {ages.shape} and dtype {ages.dtype}, expected a numeric (N,) array")
    if len(ages) != len(faces):
        fail(f"{faces_path} holds {len(faces)} faces but {ages_path} holds {len(ages)} ages; expected the same N")
    if not np.all(np.isfinite(ages)):
        fail(f"{ages_path}: ages contain NaN or inf, expected finite numbers (negative = missing)")
    x = torch.from_numpy(faces)                             # (N, H, W) or (N, H, W, 3), no copy
    x = (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2).to(device)
    return (2 * x - 1).contiguous(), torch.as_tensor(ages, dtype=torch.float32, device=device)


def valid_age(ages):
    """Handout C 3: exclude y < 0 (missing label) and y > 100 (likely wrong) from regressor training."""
    return (ages >= AGE_MIN) & (ages <= AGE_MAX)


def save_array(array, path):
    """np.save, gzipped when the name ends in .gz, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = gzip.compress(buffer.getvalue()) if path.suffix == ".gz" else buffer.getvalue()
    write_bytes(data, path)


UTKFACE_NAME = re.compile(r"^(\d+)_.*\.(jpe?g|png)$", re.IGNORECASE)   # AGE_GENDER_RACE_DATE.jpg[.chip.jpg]


def convert_utkface(src_dir, faces_path, ages_path, rgb=False):
    """UTKFace crops -> faces (N, 48, 48[, 3]) uint8 and ages (N,) int64, sorted by file name.

    Each image is centre-cropped to a square and resized to 48×48 (grayscale unless rgb).
    Returns (number converted, number of files skipped).
    """
    from PIL import Image, ImageOps
    src = Path(src_dir)
    if not src.is_dir():
        fail(f"--from-utkface {src}: not a folder (expected UTKFace's AGE_GENDER_RACE_DATE.jpg files)")
    faces, ages, skipped = [], [], 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        match = UTKFACE_NAME.match(path.name)
        if not match:
            skipped += 1
            continue
        try:
            with Image.open(path) as im:   # centre crop to a square, then resize to 48×48
                im = ImageOps.fit(im.convert("RGB" if rgb else "L"), (SIZE, SIZE), Image.BICUBIC)
                faces.append(np.asarray(im, dtype=np.uint8))
        except OSError:   # truncated or not an image
            skipped += 1
            continue
        ages.append(int(match.group(1)))
    if not faces:
        fail(f"--from-utkface {src}: no readable AGE_GENDER_RACE_DATE.jpg images found")
    save_array(np.stack(faces), faces_path)
    save_array(np.array(ages, dtype=np.int64), ages_path)
    return len(faces), skipped


def synthetic_faces(n, seed=0, rgb=False, size=SIZE):
    """Cartoon faces (uint8, like the course file) whose "age" is a known function of the image:
    age = 100 × mean brightness in [0, 1] (`brightness_age`). Every 25th age is −1 (missing)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]                      # (S, S)
    cx, cy = g.uniform(-0.1, 0.1, (2, n, 1, 1))
    rx, ry = g.uniform(0.45, 0.6, (n, 1, 1)), g.uniform(0.6, 0.8, (n, 1, 1))
    face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1                 # head ellipse
    eyes = (np.abs(xx - cx) - 0.4 * rx) ** 2 + (yy - cy + 0.25 * ry) ** 2 < (0.13 * rx) ** 2
    mouth = (np.abs(xx - cx) < 0.4 * rx) & (np.abs(yy - cy - 0.45 * ry) < 0.06)
    template = np.where(face, np.where(eyes | mouth, 0.1, 0.9), 0.3)       # (n, S, S) in [0, 1]
    level = g.uniform(0, 1, (n, 1, 1))                                      # overall brightness
    img = (0.6 * level + 0.4 * template + 0.03 * g.standard_normal(template.shape)).clip(0, 1)
    if rgb:
        img = img[..., None] * np.array([1.0, 0.85, 0.7])                  # a skin tint
    faces = (img * 255).round().astype(np.uint8)
    ages = brightness_age(from_uint8(faces)).numpy()
    ages[::25] = -1
    return faces, ages


def brightness_age(x):
    """The synthetic data's age: 100 × mean brightness, for images (N, C, H, W) in [-1, 1]."""
    return 50.0 * (1.0 + x.float().mean(dim=(1, 2, 3)))
