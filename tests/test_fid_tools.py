"""The fid and fetch_inception_weights commands of tools/ on small local files (no download, no trained model):
FID and FD-judge as the Fréchet distance of their features, and one-line errors for files they cannot use."""
import os

import numpy as np
import pytest
import torch

from common.data import from_uint8, synthetic_mnist, to_uint8
from common.frechet import FeatureStats, fd_from_features
from common.inception import FID_WEIGHTS_FILE, FIDInceptionV3
from common.judge import get_judge
from tools import fetch_inception_weights, fid

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def judge():
    return get_judge("mnist", "unused", CPU, dry_run=True)


# --- fid ---

def npz(path, images):
    np.savez(path, images=images)
    return str(path)


class PixelFeatures:
    """Stands in for the FID Inception: 16 pixels from the middle of each image are its features."""

    def __init__(self, device, weights):
        self.weights = weights

    def stats(self, x):
        return FeatureStats().update(x.flatten(1)[:, 300:316])


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No FID Inception weights anywhere, and no download."""
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


def offline(*args, **kwargs):
    raise OSError("no network")


def test_fid_tool_skips_fid_without_weights_and_gives_fd_judge(tmp_path, judge, no_weights, monkeypatch, capsys):
    monkeypatch.setattr(fid, "get_judge", lambda *args, **kwargs: judge)
    a, b = to_uint8(synthetic_mnist(100, seed=7)[0]), to_uint8(synthetic_mnist(120, seed=8)[0])
    result = fid.main([npz(tmp_path / "a.npz", a), npz(tmp_path / "b.npz", b), "--judge-dataset", "mnist"])
    out = capsys.readouterr().out
    assert "(100 images)" in out and "(120 images)" in out and "warning" in out
    assert f"FID: skipped (download {'https://'}" in out and FID_WEIGHTS_FILE in out and result["fid"] is None
    assert result["fd_judge"] == pytest.approx(judge.fd(from_uint8(a), from_uint8(b)))
    assert f"FD-judge (mnist judge): {result['fd_judge']:.3f}" in out
    fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--judge-dataset", "mnist", "--no-fid"])
    assert "FID: skipped (--no-fid)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--judge-dataset"):                 # neither side names a dataset
        fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])


def test_fid_tool_measures_fid_over_the_inception_features(tmp_path, judge, monkeypatch, capsys):
    (tmp_path / "weights.pth").write_bytes(b"found, never read here")
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(tmp_path / "weights.pth"))
    monkeypatch.setattr(fid, "InceptionFeatures", PixelFeatures)
    monkeypatch.setattr(fid, "get_judge", lambda *args, **kwargs: judge)
    x_a, x_b = synthetic_mnist(60, seed=1)[0], synthetic_mnist(80, seed=2)[0]
    result = fid.main([npz(tmp_path / "a.npz", to_uint8(x_a)), npz(tmp_path / "b.npz", to_uint8(x_b)),
                       "--judge-dataset", "mnist", "--n", "50"])                 # at most 50 a side
    features = [from_uint8(to_uint8(x))[:50].flatten(1)[:, 300:316] for x in (x_a, x_b)]
    assert result["n_real"] == result["n_fake"] == 50 and result["fid"] > 0
    assert result["fid"] == pytest.approx(fd_from_features(*features))
    assert f"FID: {result['fid']:.3f}" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    ("not an archive", "bad.npz is damaged or not an .npz of arrays (ValueError): write it again, or pass another"),
    (b"PK\x03\x04 cut short", "bad.npz is damaged or not an .npz of arrays (BadZipFile)"),
    ({"pictures": np.zeros((5, 28, 28), np.uint8)}, "got none"),
    ({"images": np.zeros((5, 28, 28), np.float32)}, "got float32 (5, 28, 28)"),
    ({"images": np.zeros((5, 28, 28, 3), np.uint8)}, "28 × 28 (grey), got uint8 (5, 28, 28, 3)"),
    ({"images": np.zeros((1, 28, 28), np.uint8)}, "at least 2"),
    (None, "bad.npz does not exist"),
])
def test_fid_tool_bad_image_files_are_one_line_errors(tmp_path, bad, message):
    good = npz(tmp_path / "good.npz", to_uint8(synthetic_mnist(20)[0]))
    path = tmp_path / "bad.npz"
    if isinstance(bad, (str, bytes)):
        path.write_bytes(bad.encode() if isinstance(bad, str) else bad)
    elif bad is not None:
        np.savez(path, **bad)
    with pytest.raises(SystemExit) as stop:
        fid.main([good, str(path), "--judge-dataset", "mnist", "--no-fid"])
    assert message in str(stop.value) and "\n" not in str(stop.value)


def test_fid_tool_names_what_it_cannot_find(tmp_path):
    good = npz(tmp_path / "good.npz", to_uint8(synthetic_mnist(20)[0]))
    with pytest.raises(SystemExit, match="mnist-tset is neither"):            # a typo is named as such
        fid.main(["mnist-tset", good])
    with pytest.raises(SystemExit, match="nonexistent.pth: no such file"):
        fid.main([good, good, "--judge-dataset", "mnist", "--inception-weights", str(tmp_path / "nonexistent.pth")])


# --- fetch_inception_weights ---

@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A file laid out as the FID weights (untrained values, fp16 to keep it small): what the loader checks."""
    path = tmp_path_factory.mktemp("weights") / FID_WEIGHTS_FILE
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in FIDInceptionV3().state_dict().items()}, path)
    return path


def test_fetch_finds_a_local_file_and_checks_it_loads(weights_file, no_weights, monkeypatch, capsys):
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(weights_file))
    assert fetch_inception_weights.main([]) == weights_file
    assert f"FID Inception weights: {weights_file} (they load)" in capsys.readouterr().out


def fake_download(url, map_location=None, progress=True):
    """torch.hub's download: the file lands in <hub dir>/checkpoints/ under the URL's name."""
    state = torch.load(os.environ["TEST_WEIGHTS"], weights_only=True)
    target = os.path.join(torch.hub.get_dir(), "checkpoints", url.rsplit("/", 1)[1])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    torch.save(state, target)
    return state


def test_fetch_downloads_once_into_the_hub_cache(weights_file, tmp_path, no_weights, monkeypatch):
    monkeypatch.setenv("TEST_WEIGHTS", str(weights_file))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    path = fetch_inception_weights.main([])
    assert path == tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE and path.is_file()


def test_fetch_offline_or_damaged_is_a_one_line_error(tmp_path, no_weights, monkeypatch):
    with pytest.raises(SystemExit) as stop:                                   # nothing here, and no network
        fetch_inception_weights.main([])
    assert "download failed" in str(stop.value) and FID_WEIGHTS_FILE in str(stop.value) and "\n" not in str(stop.value)
    (tmp_path / "damaged.pth").write_bytes(b"PK\x03\x04 half a zip")
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(tmp_path / "damaged.pth"))
    with pytest.raises(SystemExit, match="not a readable weights file"):
        fetch_inception_weights.main([])
