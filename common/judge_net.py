"""The judge network and what it measures: class accuracy, FD-judge and within-set diversity.

A JudgeNet is a small CNN classifier whose penultimate layer gives the features that FD-judge and
the diversity figure use; a Judge wraps a trained one with the numbers Handout A asks for. Training
the judges, and loading or training one on demand (get_judge), is in common/judge.py.
"""
from pathlib import Path

import torch
import torch.nn as nn

from .files import atomic_save
from .frechet import FeatureStats, frechet_distance, mean_pairwise_distance
from .parts import state_hash
from .utils import fail, load_checkpoint


def conv_bn_relu(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class JudgeNet(nn.Module):
    """conv stack -> `feature_dim` penultimate features (used for FD-judge, diversity) -> 10 logits."""

    def __init__(self, width=32, feature_dim=128):
        super().__init__()
        self.arch = {"width": width, "feature_dim": feature_dim}  # saved with the weights
        c = width
        self.body = nn.Sequential(
            conv_bn_relu(1, c), nn.MaxPool2d(2),  # (B, c, 14, 14)
            conv_bn_relu(c, c), conv_bn_relu(c, c), nn.MaxPool2d(2),  # (B, c, 7, 7)
            conv_bn_relu(c, 2 * c), conv_bn_relu(2 * c, 2 * c), nn.MaxPool2d(2),  # (B, 2c, 3, 3)
            nn.Flatten(), nn.Linear(2 * c * 9, feature_dim), nn.ReLU())  # (B, F)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, 10))

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class Judge:
    """A trained JudgeNet and the numbers Handout A asks for. x: float (N, 1, 28, 28) in [-1, 1], any device."""

    def __init__(self, net, dataset, device, batch_size=1000, test_accuracy=None):
        self.net, self.dataset, self.test_accuracy = net.eval(), dataset, test_accuracy
        self.device, self.batch_size = torch.device(device), batch_size

    @property
    def card(self):
        """Which judge this is. FD-judge values compare only between runs whose judge `id`s are equal: the
        training is seeded and bit-reproducible on one machine, but another CPU or torch build lands elsewhere."""
        return {"dataset": self.dataset, "id": state_hash(self.net)[:12], "test_accuracy": self.test_accuracy}

    @torch.no_grad()
    def outputs(self, x, features=False):
        """Logits (N, 10), or penultimate features (N, F) when `features`, as float32 CPU tensors."""
        self.net.eval()
        out = []
        for s in range(0, len(x), self.batch_size):
            xb = x[s:s + self.batch_size].to(self.device, torch.float32)
            xb = xb.contiguous(memory_format=torch.channels_last)
            out.append((self.net.features(xb) if features else self.net(xb)).float().cpu())
        return torch.cat(out)

    def predict(self, x):
        """Predicted labels (N,), int64 on the CPU."""
        return self.outputs(x).argmax(1)

    def class_accuracy(self, x, y):
        """Fraction of x the judge labels y (a tensor of labels, or one int for all)."""
        return (self.predict(x) == torch.as_tensor(y).cpu()).float().mean().item()

    def features(self, x):
        return self.outputs(x, features=True)

    def stats(self, x):
        return FeatureStats().update(self.features(x))

    def fd(self, x_a, x_b):
        """FD-judge: Fréchet distance between Gaussians fitted to judge features of x_a and x_b (not FID).
        x_b may also be judge.stats(x) of a reference set, computed once and reused."""
        b = x_b if isinstance(x_b, FeatureStats) else self.stats(x_b)
        return frechet_distance(*self.stats(x_a).mean_cov(), *b.mean_cov())

    def diversity(self, x):
        """Within-set spread: mean pairwise L2 distance between judge features."""
        return mean_pairwise_distance(self.features(x))


def save_judge(judge, path, **info):
    """Write weights, architecture and `info` (accuracy, timing, ...) atomically, for load_judge."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": {k: v.cpu() for k, v in judge.net.state_dict().items()}, "arch": judge.net.arch,
                 "dataset": judge.dataset, **info}, path)


def load_judge(path, dataset, device):
    ckpt = load_checkpoint(path, device)
    try:
        net = JudgeNet(**ckpt["arch"])
        net.load_state_dict(ckpt["model"])
        test_accuracy = float(ckpt["test_accuracy"])
    except (KeyError, TypeError, RuntimeError):
        fail(f"{path} does not hold a judge of this version; delete it and it is retrained")
    return Judge(net.to(device, memory_format=torch.channels_last), dataset, device,
                 test_accuracy=test_accuracy)
