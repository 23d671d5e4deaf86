"""Tests for common/judge.py and judge_net.py (on a dry-run judge: synthetic data, seconds), and a smoke
run of common/fid.py."""
import numpy as np
import pytest
import torch

import common.fid as fid
from common.data import synthetic_dataset, to_uint8
from common.frechet import fd_from_features, mean_pairwise_distance
from common.judge import augment, get_judge, main


def raise_offline(*args, **kwargs):
    """Stands in for a download when there is no network."""
    raise OSError("no network")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("judge") / "cache"
    dry = get_judge("mnist", device="cpu", cache_dir=cache_dir, dry_run=True)
    assert not cache_dir.exists()  # a dry run never reads or writes the cache
    return dry


def test_dry_run_judge_learns_synthetic_classes(judge):
    x, y = synthetic_dataset(300, seed=1)  # held out: other noise, other order
    assert judge.class_accuracy(x, y) > 0.95
    pred = judge.predict(x)
    assert pred.shape == (300,) and pred.dtype == torch.int64
    assert judge.class_accuracy(x[y == 3], 3) == pytest.approx((pred[y == 3] == 3).float().mean().item())


def test_features_shape_and_batching(judge):
    x, _ = synthetic_dataset(50, seed=2)
    judge.batch_size = 16  # several batches, last one short
    f = judge.features(x)
    judge.batch_size = 1000
    assert f.shape == (50, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f, judge.features(x))


def test_fd_judge_zero_for_same_set_and_larger_for_other_set(judge):
    x, y = synthetic_dataset(400, seed=3)
    x_same_dist, _ = synthetic_dataset(400, seed=4)
    assert judge.fd(x, x) == pytest.approx(0.0, abs=1e-6)
    d_same, d_other = judge.fd(x, x_same_dist), judge.fd(x[y < 5], x[y >= 5])
    assert 0 <= d_same < d_other
    assert judge.fd(x, judge.stats(x_same_dist)) == pytest.approx(d_same)   # reusing a reference's stats


def test_fd_judge_is_the_frechet_distance_of_the_penultimate_features(judge):
    # FD-judge fits its Gaussians to the judge's features (the 16-d penultimate layer here), not to its logits
    x, y = synthetic_dataset(200, seed=9)
    a, b = x[y < 5], x[y >= 5]
    assert judge.fd(a, b) == pytest.approx(fd_from_features(judge.features(a), judge.features(b)), rel=1e-9)


def test_diversity(judge):
    x, _ = synthetic_dataset(60, seed=5)
    assert judge.diversity(x[:1].repeat(10, 1, 1, 1)) == pytest.approx(0.0, abs=1e-6)
    assert judge.diversity(x) > 0
    f = torch.randn(30, 4)
    brute = np.mean([np.linalg.norm(f[i] - f[j]) for i in range(30) for j in range(30) if i != j])
    assert mean_pairwise_distance(f, chunk=7) == pytest.approx(brute, rel=1e-6)


def test_augment_shifts_and_flips():
    x = torch.full((4, 1, 28, 28), -1.0)
    x[:, :, 10:18, 12:16] = 1.0
    torch.manual_seed(0)
    moved = augment(x, shift=2, flip=True)
    assert moved.shape == x.shape and set(moved.unique().tolist()) == {-1.0, 1.0}
    assert (moved == 1).sum() == (x == 1).sum()  # nothing falls off the edge: it moves at most 2 pixels
    assert torch.equal(augment(x, shift=0, flip=False), x)


def test_cli_dry_run_writes_a_judge_that_get_judge_loads(tmp_path):
    main(["--dataset", "fashion", "--dry-run", "--out-dir", str(tmp_path)])
    (tmp_path / "fashion-dry-run.pt").rename(tmp_path / "fashion.pt")
    loaded = get_judge("fashion", cache_dir=tmp_path)
    x, y = synthetic_dataset(100, seed=6)
    assert loaded.class_accuracy(x, y) > 0.9 and loaded.features(x).shape == (100, 16)
    with pytest.raises(SystemExit, match="no judge"):
        get_judge("cifar", cache_dir=tmp_path)


def test_judge_card_names_the_weights_and_survives_a_reload(tmp_path, capsys):
    main(["--dataset", "mnist", "--dry-run", "--out-dir", str(tmp_path)])
    (tmp_path / "mnist-dry-run.pt").rename(tmp_path / "mnist.pt")
    saved = torch.load(tmp_path / "mnist.pt", weights_only=False)
    capsys.readouterr()
    loaded = get_judge("mnist", cache_dir=tmp_path)
    card = loaded.card
    assert card["test_accuracy"] == saved["test_accuracy"] and len(card["id"]) == 12
    assert f"judge {card['id']} " in capsys.readouterr().out          # every run's log names its judge
    assert get_judge("mnist", cache_dir=tmp_path).card == card         # same file, same id
    with torch.no_grad():
        loaded.net.head[1].bias[0] += 1e-6                              # one weight moves: another judge
    assert loaded.card["id"] != card["id"]
    del saved["test_accuracy"]                                          # a judge file from before the card
    torch.save(saved, tmp_path / "mnist.pt")
    with pytest.raises(SystemExit, match="not hold a judge of this version"):
        get_judge("mnist", cache_dir=tmp_path)


def test_fid_cli_with_npz_files_skips_fid_without_weights(judge, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(fid, "get_judge", lambda *args, **kwargs: judge)
    x_a, _ = synthetic_dataset(100, seed=7)
    x_b, _ = synthetic_dataset(120, seed=8)
    np.savez(tmp_path / "a.npz", images=to_uint8(x_a))
    np.savez(tmp_path / "b.npz", images=to_uint8(x_b))
    result = fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--judge-dataset", "mnist"])
    out = capsys.readouterr().out
    assert "FID: skipped" in out and f"FD-judge (mnist judge {judge.card['id']})" in out and "warning" in out
    assert result["judge"] == judge.card and result["fid"] is None
    assert result["n_real"] == 100 and result["n_fake"] == 120
    assert result["fd_judge"] >= 0
    with pytest.raises(SystemExit, match="is neither an existing .npz file"):
        fid.main([str(tmp_path / "a.npz"), str(tmp_path / "nope.npz"), "--judge-dataset", "mnist"])
    with pytest.raises(SystemExit, match="--judge-dataset"):
        fid.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    with pytest.raises(SystemExit, match="mnist-tset is neither an existing .npz file"):   # a typo is named as such
        fid.main(["mnist-tset", str(tmp_path / "b.npz")])


def test_compute_fid_offline_without_weights_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", raise_offline)
    x, _ = synthetic_dataset(4)
    with pytest.raises(SystemExit) as e:
        fid.compute_fid(x, x, "cpu")
    assert "\n" not in str(e.value) and "pt_inception-2015-12-05-6726825d.pth" in str(e.value)
