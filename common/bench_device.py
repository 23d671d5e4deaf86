"""What the device itself can do, for common/bench.py: a synchronised clock, the device's name, the
compute roof (GFLOP/s of one large matmul), the data path (images/s of just iterating batches) and
the cost of FID (the FID Inception's images/s and one Fréchet distance).
"""
import time
from pathlib import Path

import torch
from torchvision import datasets, transforms

from .data import batches, load_dataset, synthetic_dataset
from .frechet import frechet_distance
from .inception import FIDInceptionV3, InceptionFeatures
from .utils import to_device

DATA_BATCHES = 100
MNIST_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def clock(device):
    """time.perf_counter() after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def matmul_roof(device, dtype=torch.float32, n=4096, min_seconds=0.5):
    """GFLOP/s of a large square matmul, repeated for at least min_seconds: about the most this device
    does in `dtype`, a compute roof for the training GFLOP/s column (memory traffic is not modelled).
    On CUDA, float32 matmuls may use TF32 here exactly when cuDNN's float32 convolutions do."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        a @ b                                                            # warm-up
        calls, t0, seconds = 0, clock(device), 0.0
        while seconds < min_seconds:
            for _ in range(10 if device.type == "cuda" else 1):
                a @ b
                calls += 1
            seconds = clock(device) - t0
        return calls * 2 * n ** 3 / seconds / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def data_rates(args, device, B=128):
    """Images/s of just iterating batches: on-device tensor index slices vs a per-item DataLoader."""
    if args.dry_run:   # torchvision's offline fake images (PIL), through the same per-item transform
        (x, y), what = synthetic_dataset(512, device), "synthetic"
        dataset = datasets.FakeData(512, (1, 28, 28), 10, transform=MNIST_TRANSFORM)
    else:
        (x, y), what = load_dataset("mnist", args.data_dir, device=device), "MNIST train"
        dataset = datasets.MNIST(args.data_dir, train=True, transform=MNIST_TRANSFORM)
    t0 = clock(device)
    for idx in batches(len(x), B, device):
        x_batch, y_batch = x[idx], y[idx]
    tensor_rate = len(x) / (clock(device) - t0)
    loader = torch.utils.data.DataLoader(dataset, B, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda")
    batch_iter, n_batches, n = iter(loader), min(DATA_BATCHES, len(loader) - 1), 0
    next(batch_iter)                                                 # warm-up (starts the workers)
    t0 = clock(device)
    for _, (x_batch, y_batch) in zip(range(n_batches), batch_iter):
        x_batch, y_batch = x_batch.to(device, non_blocking=True), y_batch.to(device, non_blocking=True)
        n += len(x_batch)
    loader_rate = n / (clock(device) - t0)
    return [(f"one {device.type} tensor, index-slice batches ({what}, {len(x):,} images)", tensor_rate),
            (f"DataLoader, per-item ToTensor+Normalize, {args.workers} workers ({what}, {n:,} images)",
             loader_rate)]


def fid_cost(device, n=10_000, batches=3, batch_size=None, dim=2048):
    """{rate: Inception images/s, batch, fd_seconds: one Fréchet distance, fid_seconds: an FID of n vs n}.

    The FID Inception (common/inception.py) runs with untrained weights: the same arithmetic as the
    real ones, which this machine may not have. Its images/s is timed over `batches` batches after one
    warm-up batch; the Fréchet distance (our float64 eigendecomposition square roots) over two random
    dim × dim covariances (2048: the Inception features). An FID of n vs n images is 2n images through
    the network and one distance (half the images when the real side's statistics are cached, as
    common/fid.py does).
    """
    net = to_device(FIDInceptionV3(), device).eval().requires_grad_(False)
    extractor = InceptionFeatures(device, net=net, batch_size=batch_size, quiet=True)
    x = torch.rand(extractor.batch_size * (batches + 1), 1, 28, 28, device=device) * 2 - 1
    extractor.stats(x[:extractor.batch_size])                       # warm-up
    t0 = clock(device)
    extractor.stats(x[extractor.batch_size:])
    rate = (len(x) - extractor.batch_size) / (clock(device) - t0)
    A, B = torch.randn(2, dim, 2 * dim, dtype=torch.float64)
    t0 = time.perf_counter()
    frechet_distance(torch.zeros(dim), A @ A.T / (2 * dim), torch.ones(dim), B @ B.T / (2 * dim))
    fd_seconds = time.perf_counter() - t0
    return dict(rate=rate, batch=extractor.batch_size, fd_seconds=fd_seconds, fid_seconds=2 * n / rate + fd_seconds)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return names[0] if names else "unknown CPU"
