"""Data: MNIST's IDX files (plain or gzipped) read into one [-1, 1] tensor, one-line errors for missing or
damaged files, and the uint8 round trip that every samples .npz goes through."""
import gzip
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data import IDX_FILES, from_uint8, load_mnist, to_uint8


def write_idx(folder, pixels, labels, gz=False):
    """The four MNIST IDX files (big-endian headers: magic, count, rows, cols), train and test alike."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    for name in IDX_FILES[True] + IDX_FILES[False]:
        if "images" in name:
            data = struct.pack(">IIII", 2051, n, 28, 28) + pixels.astype(np.uint8).tobytes()
        else:
            data = struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes()
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_the_idx_files_offline_and_scales_to_minus_1_1(tmp_path, gz):
    pixels = np.zeros((3, 28, 28), np.uint8)
    pixels[1] = 255
    pixels[2, 0, 0] = 51                       # 51 / 127.5 − 1 = −0.6
    write_idx(tmp_path / "FashionMNIST" / "raw", pixels, np.array([7, 0, 4]), gz)
    x, y = load_mnist("fashion", tmp_path, train=False)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [7, 0, 4] and y.dtype == torch.int64
    assert (x[0] == -1).all() and (x[1] == 1).all()
    assert x[2, 0, 0, 0].item() == pytest.approx(-0.6) and x[2, 0, 0, 1] == -1


def test_a_truncated_file_is_named_with_how_to_get_it_again(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, np.zeros((3, 28, 28)), np.array([1, 2, 3]))
    damaged = raw / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    with pytest.raises(SystemExit) as e:
        load_mnist("mnist", tmp_path)
    assert str(damaged) in str(e.value) and "damaged" in str(e.value) and "\n" not in str(e.value)


class MNIST:
    """Stands in for torchvision's datasets.MNIST with no network (load_mnist names the folder after the class)."""

    def __init__(self, root, *args, **kwargs):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)   # as torchvision does before downloading
        raise urllib.error.URLError("no network")


def test_missing_files_offline_are_a_one_line_error_and_leave_no_empty_folders(tmp_path, monkeypatch):
    from torchvision import datasets
    monkeypatch.setattr(datasets, "MNIST", MNIST)
    data_dir = tmp_path / "data"
    with pytest.raises(SystemExit, match=f"train-images-idx3-ubyte.* in {data_dir / 'MNIST' / 'raw'}"):
        load_mnist("mnist", data_dir)
    assert not data_dir.exists()                   # no empty folders left to puzzle over


def test_to_uint8_clamps_rounds_and_round_trips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5]).reshape(1, 1, 1, 5)
    assert to_uint8(x).tolist() == [[[0, 0, 128, 255, 255]]]     # out of range clamps, never wraps
    for shape in ((4, 1, 6, 6), (4, 3, 6, 6)):
        x = torch.randn(shape)
        images = to_uint8(x)
        assert images.dtype == np.uint8 and images.shape == ((4, 6, 6) if shape[1] == 1 else (4, 6, 6, 3))
        back = from_uint8(images)
        assert back.shape == shape
        assert (back - x.clamp(-1, 1)).abs().max() <= 0.5 / 127.5 + 1e-6   # half a grey level
