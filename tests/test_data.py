"""Data: MNIST's IDX files (plain or gzipped) read into one [-1, 1] tensor, one-line errors for missing or
damaged files and a --data-dir that is a file, the uint8 round trip that every samples .npz goes through; Handout
C's faces files and tools/utkface.py, which makes them."""
import gzip
import io
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.data import IDX_FILES, from_uint8, load_afhq, load_faces, load_mnist, synthetic_faces, to_uint8
from tools import utkface


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


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "afile").write_text("x")
    for load in (lambda: load_mnist("mnist", tmp_path / "afile"), lambda: load_afhq(tmp_path / "afile")):
        with pytest.raises(SystemExit, match=r"^error: --data-dir \S+afile is a file, not a folder: name the folder "
                                             r"that holds the datasets$"):
            load()
    with pytest.raises(SystemExit, match=r"^error: faces file \S+afile/f.npy.gz: \S+afile is a file, not a folder"):
        load_faces(tmp_path / "afile" / "f.npy.gz", tmp_path / "afile" / "a.npy")


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


# --- Handout C's faces ---

def write_npy(array, path):
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(gzip.compress(buffer.getvalue()) if path.suffix == ".gz" else buffer.getvalue())


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 1), (np.float32, 1 / 255), (np.float64, 1.0), (np.int64, 1)])
@pytest.mark.parametrize("rgb", [False, True])
def test_load_faces_accepts_the_documented_formats(tmp_path, dtype, scale, rgb):
    faces, ages = synthetic_faces(5)
    faces = np.stack([faces, faces // 2, faces // 3], axis=-1) if rgb else faces      # (5, 48, 48[, 3]) uint8
    write_npy((faces * scale).astype(dtype), tmp_path / "f.npy.gz")
    write_npy(ages.reshape(5, 1) if rgb else ages, tmp_path / "a.npy")                  # (N,) or (N, 1)
    x, y = load_faces(tmp_path / "f.npy.gz", tmp_path / "a.npy")
    assert x.shape == (5, 3 if rgb else 1, 48, 48) and x.dtype == torch.float32
    expected = torch.as_tensor(faces.reshape(5, 48, 48, -1)).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(y, torch.as_tensor(ages, dtype=torch.float32))


@pytest.mark.parametrize("faces, ages, message", [
    (np.zeros((4, 28, 28), np.uint8), np.zeros(4), "faces are uint8 (4, 28, 28), expected numbers of shape"),
    (np.zeros((4, 3, 48, 48), np.uint8), np.zeros(4), "(4, 3, 48, 48), expected numbers of shape (N, 48, 48)"),
    (np.zeros((0, 48, 48), np.uint8), np.zeros(0), "expected numbers of shape"),
    (np.zeros((4, 48, 48), bool), np.zeros(4), "faces are bool"),
    (np.full((4, 48, 48), 300.0), np.zeros(4), "face values span [300.0, 300.0], expected 0–255"),
    (np.full((4, 48, 48), -0.5), np.zeros(4), "face values span [-0.5, -0.5]"),
    (np.zeros((4, 48, 48), np.uint8), np.zeros(5), "ages are float64 (5,), expected 4 finite numbers"),
    (np.zeros((4, 48, 48), np.uint8), np.zeros((4, 2)), "ages are float64 (4, 2), expected 4"),
    (np.zeros((4, 48, 48), np.uint8), np.array([1, 2, np.nan, 4]), "expected 4 finite numbers"),
])
def test_load_faces_rejects_bad_files_in_one_line(tmp_path, faces, ages, message):
    np.save(tmp_path / "f.npy", faces)
    np.save(tmp_path / "a.npy", ages)
    with pytest.raises(SystemExit) as stop:
        load_faces(tmp_path / "f.npy", tmp_path / "a.npy")
    assert str(stop.value).startswith("error: ") and message in str(stop.value) and "\n" not in str(stop.value)


def test_missing_or_corrupt_face_files_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: faces file .*nope.npy.gz not found: .*tools.utkface") as stop:
        load_faces(tmp_path / "nope.npy.gz", tmp_path / "a.npy")
    (tmp_path / "bad.npy.gz").write_bytes(b"not gzip")
    with pytest.raises(SystemExit, match=r"^error: faces file .*bad.npy.gz is not a readable .npy array") as stop:
        load_faces(tmp_path / "bad.npy.gz", tmp_path / "a.npy")
    assert "\n" not in str(stop.value)


def test_utkface_converts_a_folder_of_jpegs(tmp_path):
    src = tmp_path / "UTKFace"
    (src / "part2").mkdir(parents=True)
    grey = {"23_0_1_20170116174525125.jpg.chip.jpg": (23, 200), "7_1_0_20170109150557335.jpg": (7, 60),
            "part2/101_0_0_20170112213500903.jpg": (101, 140)}
    for name, (_, level) in grey.items():
        image = np.zeros((40, 80, 3), np.uint8)     # 80 wide, 40 high: black sides around a grey centre square
        image[:, 20:60] = level
        Image.fromarray(image).save(src / name, quality=95)
    (src / "README.txt").write_text("not a face")
    (src / "30_0_0_20170101000000000.jpg").write_bytes(b"truncated")
    faces, ages = tmp_path / "out" / "faces.npy.gz", tmp_path / "out" / "ages.npy"
    assert utkface.main([str(src), "--faces", str(faces), "--ages", str(ages)]) == {"converted": 3, "skipped": 2}
    x, y = load_faces(faces, ages)
    order = sorted(grey, key=lambda name: (src / name).as_posix())     # read in path order
    assert y.tolist() == [grey[name][0] for name in order] and x.shape == (3, 1, 48, 48)
    # the centre crop keeps only the grey square, so every pixel is (close to) its grey level
    level = torch.tensor([grey[name][1] for name in order], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), level, atol=0.03, rtol=0)
    assert sorted(p.name for p in faces.parent.iterdir()) == ["ages.npy", "faces.npy.gz"]   # no temporary files
    before = faces.read_bytes(), ages.read_bytes()
    with pytest.raises(SystemExit, match=r"^error: \S+faces.npy.gz and \S+ages.npy are there already: add "
                                         r"--overwrite to replace them, or name other files with --faces and --ages$"):
        utkface.main([str(src), "--faces", str(faces), "--ages", str(ages), "--rgb"])
    assert (faces.read_bytes(), ages.read_bytes()) == before
    utkface.main([str(src), "--faces", str(faces), "--ages", str(ages), "--rgb", "--overwrite"])
    assert load_faces(faces, ages)[0].shape == (3, 3, 48, 48)
    with pytest.raises(SystemExit, match=r"^error: .*missing is not a folder"):
        utkface.main([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*empty: no readable AGE_GENDER_RACE_DATE.jpg images found$"):
        utkface.main([str(tmp_path / "empty")])
