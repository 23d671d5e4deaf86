"""Shared test helpers: the repo root on sys.path and a loader for the numbered scripts."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)   # the test models are tiny: one thread avoids threading overhead

from common import run  # noqa: E402  (needs ROOT on sys.path)


def load_script(name):
    """Import e.g. '02_cfg_mnist.py' as a module (its name starts with a digit)."""
    path = ROOT / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PointMassDenoiser(nn.Module):
    """The exact ε-predictor when every training image equals `target`: ε = (x_t − √ᾱ_t·target)/√(1 − ᾱ_t)
    (Handout D Algorithm 1, line 6, solved for ε)."""

    def __init__(self, target, sched):
        super().__init__()
        self.target, self.sched = target, sched

    def forward(self, xt, t_frac, *cond):
        t = (t_frac * self.sched.T).round().long().cpu()
        ab = self.sched.alpha_bar[t].reshape(-1, 1, 1, 1).to(xt.device)   # float64: exact ε
        return (xt - ab.sqrt() * self.target) / (1 - ab).sqrt()


class ConditionalPointMass(nn.Module):
    """Exact ε-predictor of a conditional model whose class-k images all equal targets[k] and whose
    unconditional images (dropped label: mask 0) all equal `u`."""

    def __init__(self, targets, u, sched):
        super().__init__()
        self.targets, self.u, self.sched = targets, u, sched

    def forward(self, xt, t_frac, c, mask=None):
        t = (t_frac * self.sched.T).round().long().cpu()
        ab = self.sched.alpha_bar[t].reshape(-1, 1, 1, 1).to(xt.device)   # float64: exact ε
        c = c if mask is None else c * mask.reshape(-1, 1)                # a dropped label is the zero vector
        x0 = torch.where(c.sum(1).reshape(-1, 1, 1, 1) > 0, self.targets[c.argmax(1)], self.u)
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()


@pytest.fixture
def script():
    return load_script


@pytest.fixture(autouse=True)
def no_run_folder_open(monkeypatch):
    """Each test starts as a fresh process does: no run folder open yet (run.folder, set by folders.open_run)."""
    monkeypatch.setattr(run, "folder", {"out": None, "args": None})
