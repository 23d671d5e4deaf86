"""Oracle tests for common/frechet.py: closed forms, an independent complex-eigenvalue formula, invariances."""
import numpy as np
import pytest
import torch

from common.frechet import FeatureStats, fd_from_features, frechet_distance


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def fd_complex_reference(mu1, s1, mu2, s2):
    """The usual formula, computed independently: Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) in complex arithmetic."""
    eig = np.linalg.eigvals(s1 @ s2).astype(complex)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum().real)


def test_same_set_is_zero():
    x = np.random.default_rng(0).standard_normal((500, 20))
    assert fd_from_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): d^2 = (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]])
    assert d == pytest.approx(3.0 ** 2 + (2.0 - 3.0) ** 2, rel=1e-12)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [3, 64, 200])
def test_matches_complex_eigenvalue_formula(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    expected = fd_complex_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # torch inputs (float32, as features come from a network) give the same number
    got32 = frechet_distance(*(torch.tensor(a, dtype=torch.float32) for a in (mu1, s1, mu2, s2)))
    assert got32 == pytest.approx(expected, rel=1e-5)


def test_invariant_under_shared_rotation():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))
    b = rng.standard_normal((300, 16)) + 0.5
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert fd_from_features(a @ q, b @ q) == pytest.approx(fd_from_features(a, b), rel=1e-9)


def test_rank_deficient_covariances_are_finite_and_non_negative():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((10, 50)), rng.standard_normal((12, 50)) * 2  # N < D: rank <= 11
    d_ab, d_aa = fd_from_features(a, b), fd_from_features(a, a)
    assert np.isfinite(d_ab) and d_ab > 0
    assert np.isfinite(d_aa) and 0 <= d_aa < 1e-5
    zeros = np.zeros((5, 5))  # fully degenerate: two point masses
    assert frechet_distance(np.ones(5), zeros, np.zeros(5), zeros) == pytest.approx(5.0)


def test_feature_stats_over_batches_equals_np_cov():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 12)) * rng.uniform(0.1, 5, 12) + 1000.0  # large offset
    stats = FeatureStats()
    for start in range(0, 1000, 137):  # uneven batches, given as tensors
        stats.update(torch.tensor(x[start:start + 137]))
    mu, sigma = stats.mean_cov()
    assert stats.count == 1000
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_feature_size_mismatch_is_an_error():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        FeatureStats().update(np.zeros((1, 3))).mean_cov()
