"""The judge: a small CNN classifier trained on real MNIST (or Fashion-MNIST) only, the fixed yardstick of
every sample set, independent of the generative models. It gives three numbers:
  - class accuracy: how often the judge gives a sample the class it was generated for (Handout A 2(c));
  - FD-judge: the Fréchet distance (common/frechet.py) between judge features of two image sets. It is NOT
    FID: another network, 128-d features, its values on another scale;
  - diversity: mean pairwise distance between judge features within one set (Handout A 2(c), 4(c)).
get_judge loads results/judge/<dataset>.pt, training it first (minutes on a CPU) if it is missing.
"""
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import load_mnist, synthetic_mnist
from .frechet import FeatureStats, frechet_distance, mean_pairwise_distance
from .run import Progress, autocast, fail, grad_scaler, save_checkpoint

# per dataset: training epochs, and the largest random shift (pixels) of the training images
RECIPES = {"mnist": dict(epochs=6, shift=2), "fashion": dict(epochs=8, shift=1)}


def conv_bn_relu(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class JudgeNet(nn.Module):
    """(B, 1, 28, 28) -> `feature_dim` penultimate features (FD-judge, diversity) -> 10 logits."""

    def __init__(self, width=32, feature_dim=128):
        super().__init__()
        c = width
        self.body = nn.Sequential(
            conv_bn_relu(1, c), nn.MaxPool2d(2),                                  # (B, c, 14, 14)
            conv_bn_relu(c, c), conv_bn_relu(c, c), nn.MaxPool2d(2),              # (B, c, 7, 7)
            conv_bn_relu(c, 2 * c), conv_bn_relu(2 * c, 2 * c), nn.MaxPool2d(2),  # (B, 2c, 3, 3)
            nn.Flatten(), nn.Linear(2 * c * 9, feature_dim), nn.ReLU())           # (B, F)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, 10))

    def forward(self, x):
        return self.head(self.body(x))


class Judge:
    """A trained JudgeNet and its numbers. x: float (N, 1, 28, 28) in [-1, 1] on any device."""

    def __init__(self, net, dataset, test_accuracy=None, batch_size=1000):
        self.net, self.dataset, self.test_accuracy, self.batch_size = net.eval(), dataset, test_accuracy, batch_size
        self.device = next(net.parameters()).device

    @torch.no_grad()
    def outputs(self, x, features=False):
        """Logits (N, 10), or penultimate features (N, F), as float32 CPU tensors."""
        out = []
        for xb in x.split(self.batch_size):
            xb = xb.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            out.append((self.net.body(xb) if features else self.net(xb)).float().cpu())
        return torch.cat(out)

    def predict(self, x):
        return self.outputs(x).argmax(1)

    def class_accuracy(self, x, y):
        """Fraction of x the judge labels y (a tensor of labels, or one int for all)."""
        return (self.predict(x) == torch.as_tensor(y).cpu()).float().mean().item()

    def features(self, x):
        return self.outputs(x, features=True)

    def stats(self, x):
        return FeatureStats().update(self.features(x))

    def fd(self, x_a, x_b):
        """FD-judge of two image sets; x_b may be judge.stats(x) of a reference set, computed once."""
        b = x_b if isinstance(x_b, FeatureStats) else self.stats(x_b)
        return frechet_distance(*self.stats(x_a).mean_cov(), *b.mean_cov())

    def diversity(self, x):
        return mean_pairwise_distance(self.features(x))

    @property
    def card(self):
        """Which judge measured a run (FD-judge values compare only under the same judge)."""
        return {"dataset": self.dataset, "test_accuracy": self.test_accuracy}


def augment(x, shift):
    """Move each image by its own random (dy, dx) in [-shift, shift]; the background (−1) fills in."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * shift + 1, (n, 1, 1), device=x.device) for _ in range(2))
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
    return padded[torch.arange(n, device=x.device).view(n, 1, 1), 0, rows, cols].unsqueeze(1)


def fit(net, x, y, epochs, batch_size=128, lr=3e-3, shift=2):
    """Cross-entropy with AdamW and a one-cycle learning rate; x, y whole tensors on the net's device."""
    device = x.device
    steps = epochs * -(-len(x) // batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    scaler, progress = grad_scaler(device), Progress(steps, "judge", every=30)
    net.train()
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), device=device).split(batch_size):
            xb = augment(x[idx], shift) if shift else x[idx]
            with autocast(device):
                loss = F.cross_entropy(net(xb.contiguous(memory_format=torch.channels_last)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scale = scaler.get_scale()
            scaler.update()
            if scaler.get_scale() >= scale:   # fp16's scaler skips a step with inf gradients, and lowers its scale
                schedule.step()
            progress.step(len(idx), loss=loss)
    return net.eval()


def get_judge(dataset, data_dir, device, dry_run=False, cache_dir="results/judge"):
    """The judge of 'mnist' or 'fashion': loaded from <cache_dir>/<dataset>.pt, trained first if missing.
    dry_run: a tiny judge fitted to synthetic images in a second (never cached)."""
    if dry_run:
        with torch.random.fork_rng(devices=[]):   # deterministic, and the caller's random stream is untouched
            torch.manual_seed(0)
            x, y = synthetic_mnist(320, device)
            net = JudgeNet(8, 16).to(device, memory_format=torch.channels_last)
            return Judge(fit(net, x, y, epochs=2, batch_size=32, lr=1e-2, shift=0), dataset)
    path = Path(cache_dir) / f"{dataset}.pt"
    if path.is_file():
        return load_judge(path, dataset, device)
    net = JudgeNet().to(device, memory_format=torch.channels_last)
    print(f"no {dataset} judge at {path}: training one now (minutes on a CPU, once)", flush=True)
    torch.manual_seed(0)
    x, y = load_mnist(dataset, data_dir, train=True, device=device)
    start = time.time()
    judge = Judge(fit(net, x, y, **RECIPES[dataset]), dataset)
    judge.test_accuracy = judge.class_accuracy(*load_mnist(dataset, data_dir, train=False, device=device))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"dataset": dataset, **RECIPES[dataset]}, model=net, test_accuracy=judge.test_accuracy,
                    train_seconds=round(time.time() - start, 1))
    print(f"{dataset} judge: test accuracy {judge.test_accuracy:.2%} ({time.time() - start:.0f} s); saved to {path}")
    return judge


def load_judge(path, dataset, device):
    """The judge saved at `path`; a one-line error if the file is damaged or holds another network."""
    net = JudgeNet().to(device, memory_format=torch.channels_last)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(saved["model"])
        return Judge(net, dataset, float(saved["test_accuracy"]))
    except Exception as e:   # truncated, not a torch file, other layers
        fail(f"{path} is damaged or not a {dataset} judge of these scripts ({type(e).__name__}): delete it, and the "
             f"next run trains a new one (minutes on a CPU)")


def check_judge(dataset, dry_run=False, cache_dir="results/judge"):
    """Before a run trains anything: a saved judge that cannot be read stops it now, not after training."""
    path = Path(cache_dir) / f"{dataset}.pt"
    if not dry_run and path.is_file():
        with torch.random.fork_rng(devices=[]):   # the network's initial weights draw nothing from the run's stream
            load_judge(path, dataset, "cpu")
