"""Shared test helpers: the repo root on sys.path and a loader for the numbered scripts."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)   # the test models are tiny: one thread avoids threading overhead


def load_script(name):
    """Import e.g. '02_cfg_mnist.py' as a module (its name starts with a digit)."""
    path = ROOT / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script():
    return load_script
