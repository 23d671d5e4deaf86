"""MNIST and Fashion-MNIST as one tensor on the device (no per-item DataLoader).

Images are scaled to [-1, 1] with shape (N, 1, 28, 28); labels are int64 (N,).
Batches are index slices of these tensors (see `batches`).
"""
from pathlib import Path

import torch

from .utils import fail

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def load_dataset(name, data_dir, train=True, device="cpu"):
    """Load 'mnist' or 'fashion' through torchvision, offline if the files are already there.

    Returns (x, y): x float32 (N, 1, 28, 28) in [-1, 1], y int64 (N,), both on `device`.
    """
    from torchvision import datasets
    cls = {"mnist": datasets.MNIST, "fashion": datasets.FashionMNIST}[name]
    raw = Path(data_dir) / cls.__name__ / "raw"
    created = [folder for folder in (raw, raw.parent, Path(data_dir)) if not folder.exists()]
    try:
        ds = cls(str(data_dir), train=train, download=True)
    except Exception as e:  # offline without files: URLError, RuntimeError, ...
        for folder in created:   # innermost first: a failed download leaves no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        fail(f"could not load {cls.__name__} ({type(e).__name__}): put the four files "
             f"{', '.join(RAW_FILES)} in {raw}/, or run once with internet access")
    x = ds.data.to(device=device, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    y = ds.targets.to(device=device, dtype=torch.long)
    return x, y


def synthetic_dataset(n, device="cpu", seed=0, size=28):
    """Fake labelled images for --dry-run and tests: class k is a bright square at a k-dependent spot.

    Cheap, deterministic, and learnable, so a tiny model can pick up the label.
    """
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


def batches(n, batch_size, device, generator=None, shuffle=True):
    """Yield index tensors that cover range(n) in batches (the last one may be smaller)."""
    order = torch.randperm(n, device=device, generator=generator) if shuffle else \
        torch.arange(n, device=device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def to_uint8(x):
    """[-1, 1] float images (N, C, H, W) -> uint8 numpy (N, H, W) for one channel, else (N, H, W, C)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    x = x.permute(0, 2, 3, 1)
    return (x[..., 0] if x.shape[-1] == 1 else x).numpy()


def from_uint8(images, device="cpu"):
    """uint8 numpy (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    x = torch.as_tensor(images)
    x = x.unsqueeze(-1) if x.ndim == 3 else x
    return (x.permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0).contiguous()


def as_saved(x):
    """x exactly as a samples*.npz holds it: clamped to [-1, 1], rounded to 8 bits, back as float on x's device.
    The scripts measure these images, so `python -m common.fid` on the saved file reproduces their numbers."""
    return from_uint8(to_uint8(x), x.device)
