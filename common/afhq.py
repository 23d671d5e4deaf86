"""AFHQ (Animal Faces-HQ) from an image folder, as one RGB tensor in [-1, 1] (Handout E §7).

Layout (as in the handout's data.zip): <data_dir>/train/<class>/*.jpg, class in cat, dog, wild
(<data_dir>/<class>/*.jpg is accepted too). Every image is decoded once with PIL, centre-cropped
to a square, resized to image_size × image_size (bicubic, antialiased by PIL) and kept in memory:
x float32 (N, 3, S, S) in [-1, 1]. The decoded uint8 tensor can be cached as a .pt file, reused
while the folder's file list is unchanged.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import from_uint8
from .parts import load_part, save_part, source_hash
from .utils import fail

CLASSES = ("cat", "dog", "wild")
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def image_folder(data_dir, data_class):
    """The folder holding one AFHQ class; a one-line error when it is not there."""
    for folder in (Path(data_dir) / "train" / data_class, Path(data_dir) / data_class):
        if folder.is_dir():
            return folder
    fail(f"no AFHQ folder {Path(data_dir) / 'train' / data_class}/ (pass --data-dir DIR with "
         f"DIR/train/{data_class}/*.jpg, e.g. the handout's data.zip unpacked)")


def list_images(folder):
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not paths:
        fail(f"{folder}/ holds no .jpg, .jpeg or .png images")
    return paths


def decode(path, size):
    """One file -> (size, size, 3) uint8: RGB, centre square crop, bicubic resize."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except OSError as e:  # truncated file, not an image, ...
        fail(f"cannot read image {path} ({type(e).__name__}: {e})")


DECODE_CODE = source_hash(decode)   # hashed when loaded: the key of the decoded-image cache


def load_afhq(data_dir, data_class="cat", image_size=32, device="cpu", cache_dir=None):
    """All images of one class as (N, 3, S, S) float32 in [-1, 1] on `device`."""
    folder = image_folder(data_dir, data_class)
    paths = list_images(folder)
    # the cache is valid for these files (name, size, modification time), decoded by this code
    files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
    key = [str(folder.resolve()), image_size, DECODE_CODE, files]
    cache = Path(cache_dir) / f"afhq_{data_class}_{image_size}.pt" if cache_dir else None
    saved = load_part(cache, key) if cache is not None else None     # a stale or corrupt cache is rebuilt
    if saved is not None:
        return from_uint8(saved, device)
    images = np.stack([decode(p, image_size) for p in paths])   # (N, S, S, 3) uint8
    if cache is not None:
        save_part(cache, key, torch.from_numpy(images))
    return from_uint8(images, device)


def synthetic_afhq(n, size=32, seed=0, device="cpu"):
    """Stand-in 'animal faces' for --dry-run and tests: a coloured disc (a face) with two dark
    eyes on a vertical colour gradient. Cheap, deterministic, varied, and learnable."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(size) + 0.5) / size                       # pixel centres in (0, 1)
    yy, xx = coords.reshape(1, -1, 1), coords.reshape(1, 1, -1)       # (1, S, 1), (1, 1, S)
    top, bottom, face = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1 for _ in range(3))
    x = top + (bottom - top) * yy                                     # (N, 3, S, S) background
    cy, cx = (0.4 + 0.2 * torch.rand(n, 1, 1, generator=g) for _ in range(2))
    r = 0.22 + 0.12 * torch.rand(n, 1, 1, generator=g)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2).unsqueeze(1)   # (N, 1, S, S)
    x = torch.where(disc, face.expand_as(x), x)
    for side in (-1, 1):
        eye = ((yy - cy + 0.3 * r) ** 2 + (xx - cx - side * 0.4 * r) ** 2 < (0.2 * r) ** 2).unsqueeze(1)
        x = torch.where(eye, torch.full_like(x, -1.0), x)
    return x.clamp(-1, 1).to(device)


def write_image_folder(images, folder, quality=95):
    """uint8 (N, H, W, 3) -> folder/000000.jpg, ...: a fake AFHQ class folder for tests and trials."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=quality)
    return folder
