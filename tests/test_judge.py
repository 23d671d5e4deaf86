"""Tests for common/judge.py, on a dry-run judge (synthetic data, seconds), and on a saved judge that
get_judge loads instead of training."""
import warnings

import numpy as np
import pytest
import torch

from common.data import synthetic_mnist
from common.frechet import fd_from_features, mean_pairwise_distance
from common import judge as judge_module
from common.judge import JudgeNet, augment, check_judge, get_judge
from common.run import save_checkpoint

@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("judge") / "cache"
    dry = get_judge("mnist", "data", torch.device("cpu"), dry_run=True, cache_dir=cache_dir)
    assert not cache_dir.exists()  # a dry run never reads or writes the cache
    return dry


def test_dry_run_judge_learns_synthetic_classes(judge):
    x, y = synthetic_mnist(300, seed=1)  # held out: other noise, other order
    assert judge.class_accuracy(x, y) > 0.95
    pred = judge.predict(x)
    assert pred.shape == (300,) and pred.dtype == torch.int64
    assert judge.class_accuracy(x[y == 3], 3) == pytest.approx((pred[y == 3] == 3).float().mean().item())


def test_features_shape_and_batching(judge):
    x, _ = synthetic_mnist(50, seed=2)
    judge.batch_size = 16  # several batches, last one short
    f = judge.features(x)
    judge.batch_size = 1000
    assert f.shape == (50, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f, judge.features(x))


def test_fd_judge_zero_for_same_set_and_larger_for_other_set(judge):
    x, y = synthetic_mnist(400, seed=3)
    x_same_dist, _ = synthetic_mnist(400, seed=4)
    assert judge.fd(x, x) == pytest.approx(0.0, abs=1e-6)
    d_same, d_other = judge.fd(x, x_same_dist), judge.fd(x[y < 5], x[y >= 5])
    assert 0 <= d_same < d_other
    assert judge.fd(x, judge.stats(x_same_dist)) == pytest.approx(d_same)   # reusing a reference's stats


def test_fd_judge_is_the_frechet_distance_of_the_penultimate_features(judge):
    # FD-judge fits its Gaussians to the judge's features (the 16-d penultimate layer here), not to its logits
    x, y = synthetic_mnist(200, seed=9)
    a, b = x[y < 5], x[y >= 5]
    assert judge.fd(a, b) == pytest.approx(fd_from_features(judge.features(a), judge.features(b)), rel=1e-9)


def test_diversity(judge):
    x, _ = synthetic_mnist(60, seed=5)
    assert judge.diversity(x[:1].repeat(10, 1, 1, 1)) == pytest.approx(0.0, abs=1e-6)
    assert judge.diversity(x) > 0
    f = torch.randn(30, 4)
    brute = np.mean([np.linalg.norm(f[i] - f[j]) for i in range(30) for j in range(30) if i != j])
    assert mean_pairwise_distance(f, chunk=7) == pytest.approx(brute, rel=1e-6)


def test_augment_shifts_each_image_within_the_frame():
    x = torch.full((4, 1, 28, 28), -1.0)
    x[:, :, 10:18, 12:16] = 1.0
    torch.manual_seed(0)
    moved = augment(x, shift=2)
    assert moved.shape == x.shape and set(moved.unique().tolist()) == {-1.0, 1.0}
    assert (moved == 1).sum() == (x == 1).sum()  # nothing falls off the edge: it moves at most 2 pixels
    assert not torch.equal(moved, x)
    assert torch.equal(augment(x, shift=0), x)


def test_a_saved_judge_is_loaded_not_trained_and_a_foreign_file_is_one_line(tmp_path):
    net = JudgeNet()
    save_checkpoint(tmp_path / "mnist.pt", {"dataset": "mnist"}, model=net, test_accuracy=0.99)
    judge = get_judge("mnist", "no-data-here", torch.device("cpu"), cache_dir=tmp_path)   # no data: not trained
    assert judge.card == {"dataset": "mnist", "test_accuracy": 0.99} and not judge.net.training
    for k, v in net.state_dict().items():
        assert torch.equal(judge.net.state_dict()[k], v), k
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "fashion.pt")                # another network
    for read in (lambda: get_judge("fashion", "no-data-here", torch.device("cpu"), cache_dir=tmp_path),
                 lambda: check_judge("fashion", cache_dir=tmp_path)):        # which a run calls before it trains
        with pytest.raises(SystemExit, match=r"fashion.pt is damaged or not a fashion judge of these scripts "
                                             r"\(RuntimeError\): delete it, and the next run trains a new one") as e:
            read()
        assert "\n" not in str(e.value)





class SkipsTheFirstStep:
    """Stands in for fp16's loss scaler on a GPU: at the first step the scaled gradients overflow, so it skips the
    optimizer's step and lowers its scale; later steps go through."""

    def __init__(self):
        self.scale_, self.steps = 2.0 ** 16, 0

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        self.steps += 1
        if self.steps > 1:
            optimizer.step()

    def update(self):
        if self.steps == 1:
            self.scale_ /= 2

    def get_scale(self):
        return self.scale_


def test_a_step_the_loss_scaler_skips_does_not_advance_the_learning_rate_schedule(monkeypatch):
    # PyTorch warns "lr_scheduler.step() before optimizer.step()" when the one-cycle schedule steps past a step that
    # the scaler skipped; the schedule must step only with the optimizer
    monkeypatch.setattr(judge_module, "grad_scaler", lambda device: SkipsTheFirstStep())
    x, y = synthetic_mnist(64, torch.device("cpu"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        judge_module.fit(JudgeNet(8, 16), x, y, epochs=2, batch_size=16, lr=1e-2, shift=0)
