"""Datasets as one tensor on the device (no DataLoader): MNIST and Fashion-MNIST, Handout C's faces, AFHQ,
and the synthetic stand-ins of --dry-run. Images are float32 (N, C, H, W) in [-1, 1]; labels int64 (N,).
"""
import gzip
import io
from pathlib import Path

import numpy as np
import torch

from .run import fail

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FACE_SIZE, AGE_MIN, AGE_MAX = 48, 0, 100
AFHQ_CLASSES = ("cat", "dog", "wild")


def to_uint8(x):
    """[-1, 1] float images (N, C, H, W) -> uint8 numpy (N, H, W) for one channel, else (N, H, W, C)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().permute(0, 2, 3, 1)
    return (x[..., 0] if x.shape[-1] == 1 else x).numpy()


def from_uint8(images, device="cpu"):
    """uint8 numpy (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    x = torch.as_tensor(images)
    x = x.unsqueeze(-1) if x.ndim == 3 else x
    return (x.permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0).contiguous()


def as_saved(x):
    """x exactly as a samples .npz holds it (clamped, 8 bits), back as floats: the scripts measure these."""
    return from_uint8(to_uint8(x), x.device)


# --- MNIST and Fashion-MNIST ---

def load_mnist(name, data_dir, train=True, device="cpu"):
    """'mnist' or 'fashion' from <data_dir>/MNIST/raw/ or <data_dir>/FashionMNIST/raw/ (the IDX files, plain or
    .gz); torchvision downloads them there once if they are missing. Returns (x (N, 1, 28, 28), y (N,))."""
    from torchvision import datasets
    check_data_dir(data_dir)
    cls = {"mnist": datasets.MNIST, "fashion": datasets.FashionMNIST}[name]
    raw = Path(data_dir) / cls.__name__ / "raw"
    paths = [raw / name for name in IDX_FILES[train]]
    if not all(p.is_file() or p.with_suffix(".gz").is_file() for p in paths):
        created = [folder for folder in (raw, raw.parent, Path(data_dir)) if not folder.exists()]
        try:
            cls(str(data_dir), train=train, download=True)
        except Exception as e:   # offline: URLError, RuntimeError, ...
            for folder in created:   # innermost first: a failed download leaves no empty folders behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            fail(f"could not load {cls.__name__} ({type(e).__name__}): put {', '.join(IDX_FILES[train])} (or "
                 f"their .gz) in {raw}/, or run once with internet access")
    images, labels = (read_idx(p if p.is_file() else p.with_suffix(".gz")) for p in paths)
    if len(images) != len(labels):
        fail(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels: download both again")
    x = torch.from_numpy(images).to(device=device, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    return x, torch.from_numpy(labels).to(device=device, dtype=torch.long)


def check_data_dir(data_dir):
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        fail(f"--data-dir {data_dir} is a file, not a folder: name the folder that holds the datasets")


def read_idx(path):
    """An IDX file (0, 0, 8 = uint8, ndim; ndim big-endian sizes; the values), plain or gzipped."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        ndim = raw[3]
        sizes = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        if raw[:3] != b"\0\0\x08" or len(raw) != 4 + 4 * ndim + int(np.prod(sizes)):
            raise ValueError
    except (OSError, EOFError, ValueError, IndexError):   # truncated, not gzip, not IDX
        fail(f"{path} is damaged (not a complete IDX file): delete it and run again with internet access, or "
             f"copy an intact {path.name} there")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(sizes).copy()


def synthetic_mnist(n, device="cpu", seed=0, size=28):
    """Labelled stand-in images for --dry-run and tests: class k is a bright square at a k-dependent spot."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.full((n, 1, size, size), -1.0)
    cell = size // 4
    for k in range(10):
        r, c = divmod(k, 4)
        x[y == k, :, r * cell + 2: r * cell + cell + 2, c * cell + 1: c * cell + cell - 1] = 1.0
    x = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    perm = torch.randperm(n, generator=g)
    return x[perm].to(device), y[perm].to(device)


# --- Handout C's faces ---

def read_array(path, what):
    """np.load of a .npy or gzipped .npy file, with a one-line error if it is missing or unreadable."""
    path = Path(path)
    if path.parent.is_file():
        fail(f"{what} file {path}: {path.parent} is a file, not a folder (--data-dir names the folder of the "
             f"course files; or pass --{what} PATH)")
    if not path.is_file():
        fail(f"{what} file {path} not found: put the course file there (or pass --{what} PATH), convert UTKFace "
             f"crops with `python -m tools.utkface`, or try --dry-run")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:   # BadGzipFile, ValueError (pickled or truncated), EOFError, ...
        fail(f"{what} file {path} is not a readable .npy array ({type(e).__name__})")


def load_faces(faces_path, ages_path, device="cpu"):
    """(x, ages): faces (N, C, 48, 48) in [-1, 1], C = 1 or 3, and ages (N,) float32.
    faces: .npy or .npy.gz, (N, 48, 48) or (N, 48, 48, 3); uint8 0–255, or float in [0, 1] or [0, 255].
    ages: .npy (N,) or (N, 1), finite; < 0 (missing) and > 100 (likely wrong) are dropped by the regressor."""
    faces, ages = read_array(faces_path, "faces"), read_array(ages_path, "ages")
    numeric = np.issubdtype(faces.dtype, np.integer) or np.issubdtype(faces.dtype, np.floating)
    if faces.ndim not in (3, 4) or faces.shape[1:3] != (FACE_SIZE, FACE_SIZE) or faces.shape[3:] not in ((), (3,)) \
            or len(faces) == 0 or not numeric:
        fail(f"{faces_path}: faces are {faces.dtype} {faces.shape}, expected numbers of shape (N, 48, 48) or "
             f"(N, 48, 48, 3)")
    lo, hi = float(faces.min()), float(faces.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo and hi <= 255):
        fail(f"{faces_path}: face values span [{lo}, {hi}], expected 0–255, or floats in [0, 1]")
    scale = 1.0 if np.issubdtype(faces.dtype, np.floating) and hi <= 1 else 255.0
    ages = ages[:, 0] if ages.ndim == 2 and ages.shape[1] == 1 else ages
    if ages.shape != (len(faces),) or not np.issubdtype(ages.dtype, np.number) or not np.isfinite(ages).all():
        fail(f"{ages_path}: ages are {ages.dtype} {ages.shape}, expected {len(faces)} finite numbers (one per face)")
    x = torch.from_numpy(faces.astype(np.float32) / scale)
    x = (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2)
    return (2 * x - 1).contiguous().to(device), torch.as_tensor(ages, dtype=torch.float32, device=device)


def synthetic_faces(n, seed=0, size=FACE_SIZE):
    """Cartoon faces (uint8) whose "age" is 100 × their mean brightness; every 25th age is −1 (missing)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    cx, cy = g.uniform(-0.1, 0.1, (2, n, 1, 1))
    rx, ry = g.uniform(0.45, 0.6, (n, 1, 1)), g.uniform(0.6, 0.8, (n, 1, 1))
    face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
    eyes = (np.abs(xx - cx) - 0.4 * rx) ** 2 + (yy - cy + 0.25 * ry) ** 2 < (0.13 * rx) ** 2
    mouth = (np.abs(xx - cx) < 0.4 * rx) & (np.abs(yy - cy - 0.45 * ry) < 0.06)
    template = np.where(face, np.where(eyes | mouth, 0.1, 0.9), 0.3)
    img = (0.6 * g.uniform(0, 1, (n, 1, 1)) + 0.4 * template + 0.03 * g.standard_normal(template.shape)).clip(0, 1)
    faces = (img * 255).round().astype(np.uint8)
    ages = brightness_age(from_uint8(faces)).numpy()
    ages[::25] = -1
    return faces, ages


def brightness_age(x):
    """The synthetic faces' age: 100 × mean brightness, for images (N, C, H, W) in [-1, 1]."""
    return 50.0 * (1.0 + x.float().mean(dim=(1, 2, 3)))


# --- AFHQ (Handout E §7) ---

def load_afhq(data_dir, data_class="cat", size=32, device="cpu"):
    """Every image of one class from <data_dir>/train/<class>/ (or <data_dir>/<class>/), .jpg/.jpeg/.png, each
    centre-cropped to a square and resized to size × size (PIL bicubic): (N, 3, size, size)."""
    from PIL import Image
    check_data_dir(data_dir)
    folder = next((f for f in (Path(data_dir) / "train" / data_class, Path(data_dir) / data_class) if f.is_dir()),
                  None)
    if folder is None:
        fail(f"no AFHQ folder {Path(data_dir) / 'train' / data_class}/: pass --data-dir DIR with "
             f"DIR/train/{data_class}/*.jpg (the handout's data.zip unpacked)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        fail(f"{folder}/ holds no .jpg, .jpeg or .png images")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                side = min(im.size)
                left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
                images.append(np.asarray(im, dtype=np.uint8))
        except OSError as e:   # truncated file, not an image
            fail(f"cannot read image {path} ({type(e).__name__}); remove it or replace it")
    return from_uint8(np.stack(images), device)


def synthetic_afhq(n, size=32, seed=0, device="cpu"):
    """Stand-in 'animal faces' for --dry-run and tests: a coloured disc with two dark eyes on a gradient."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(size) + 0.5) / size
    yy, xx = coords.reshape(1, -1, 1), coords.reshape(1, 1, -1)
    top, bottom, face = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1 for _ in range(3))
    x = top + (bottom - top) * yy                                     # (N, 3, S, S) background
    cy, cx = (0.4 + 0.2 * torch.rand(n, 1, 1, generator=g) for _ in range(2))
    r = 0.22 + 0.12 * torch.rand(n, 1, 1, generator=g)
    x = torch.where(((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2).unsqueeze(1), face.expand_as(x), x)
    for side in (-1, 1):
        eye = ((yy - cy + 0.3 * r) ** 2 + (xx - cx - side * 0.4 * r) ** 2 < (0.2 * r) ** 2).unsqueeze(1)
        x = torch.where(eye, torch.full_like(x, -1.0), x)
    return x.clamp(-1, 1).to(device)
