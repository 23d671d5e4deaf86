"""Data: MNIST read from torchvision's raw files into one [-1, 1] tensor, and the uint8 round trip
that every samples.npz goes through."""
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data import RAW_FILES, from_uint8, load_dataset, to_uint8


def _write_idx(folder, pixels, labels):
    """The four MNIST idx files (big-endian headers: magic, count, rows, cols), train and test alike."""
    folder.mkdir(parents=True)
    n = len(labels)
    for name in RAW_FILES:
        if "images" in name:
            data = struct.pack(">IIII", 2051, n, 28, 28) + pixels.astype(np.uint8).tobytes()
        else:
            data = struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes()
        (folder / name).write_bytes(data)


def test_load_dataset_reads_the_raw_files_offline_and_scales_to_minus_1_1(tmp_path):
    pixels = np.zeros((3, 28, 28), np.uint8)
    pixels[1] = 255
    pixels[2, 0, 0] = 51                       # 51 / 127.5 − 1 = −0.6
    _write_idx(tmp_path / "MNIST" / "raw", pixels, np.array([7, 0, 4]))
    x, y = load_dataset("mnist", tmp_path, train=True)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [7, 0, 4] and y.dtype == torch.int64
    assert (x[0] == -1).all() and (x[1] == 1).all()
    assert x[2, 0, 0, 0].item() == pytest.approx(-0.6) and x[2, 0, 0, 1] == -1


def test_to_uint8_clamps_rounds_and_round_trips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5]).reshape(1, 1, 1, 5)
    assert to_uint8(x).tolist() == [[[0, 0, 128, 255, 255]]]     # out of range clamps, never wraps
    for shape in ((4, 1, 6, 6), (4, 3, 6, 6)):
        x = torch.randn(shape)
        images = to_uint8(x)
        assert images.dtype == np.uint8
        assert images.shape == ((4, 6, 6) if shape[1] == 1 else (4, 6, 6, 3))
        back = from_uint8(images)
        assert back.shape == shape
        assert (back - x.clamp(-1, 1)).abs().max() <= 0.5 / 127.5 + 1e-6   # half a grey level


class MNIST:
    """Stands in for torchvision's datasets.MNIST with no network and no files (load_dataset names the folder
    after the class, so it keeps torchvision's name)."""

    def __init__(self, root, *args, **kwargs):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)   # as torchvision does before downloading
        raise urllib.error.URLError("no network")


def test_missing_files_offline_are_a_one_line_error_and_leave_no_empty_folders(tmp_path, monkeypatch):
    from torchvision import datasets
    monkeypatch.setattr(datasets, "MNIST", MNIST)
    data_dir = tmp_path / "data"
    with pytest.raises(SystemExit, match=f"train-images-idx3-ubyte.* in {data_dir / 'MNIST' / 'raw'}"):
        load_dataset("mnist", data_dir)
    assert not data_dir.exists()                   # no empty folders left to puzzle over
