"""Fréchet distance between two Gaussians fitted to features: the number behind FID and FD-judge.

Handout A, Problem 4(c) asks for the Fréchet Inception Distance (Heusel et al., 2017,
https://arxiv.org/abs/1706.08500). Fit N(mu_1, S_1) and N(mu_2, S_2) to the features of two
image sets; their Fréchet (2-Wasserstein) distance is

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

`mean_pairwise_distance` is the other feature-set statistic we report (diversity).

Everything here runs in float64. Square roots come from symmetric eigendecompositions
(`eigh`), never from a general matrix square root, so no complex numbers appear and
rank-deficient covariances (fewer samples than feature dimensions) stay finite.
"""
import numpy as np
import torch

# FID's estimate is biased upwards at every sample count N (about as 1/N, Chong & Forsyth 2020: compare only
# at equal N), and strongly below the Inception feature dimension, where the sample covariance is singular
MIN_UNBIASED = 2048


def _as_float64(a):
    """numpy array or tensor (any device) -> float64 CPU tensor."""
    return torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a.detach()).to("cpu", torch.float64)


def sqrtm_psd(S):
    """Square root of a symmetric positive semi-definite matrix: V diag(sqrt(max(lambda, 0))) V^T.

    Eigenvalues a little below 0 (round-off in a rank-deficient covariance) are clamped to 0.
    """
    lam, V = torch.linalg.eigh((S + S.T) / 2)
    return (V * lam.clamp(min=0).sqrt()) @ V.T


def trace_sqrt_product(S1, S2):
    """Tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}, the cross term of the Fréchet distance.

    M = S_1^{1/2} S_2 S_1^{1/2} is symmetric PSD, so its trace-sqrt is the sum of the square
    roots of its (clamped) eigenvalues. These equal the eigenvalues of S_1 S_2, which is how
    the usual scipy.linalg.sqrtm formula computes the same number, in complex arithmetic.
    """
    root1 = sqrtm_psd(S1)
    M = root1 @ S2 @ root1
    lam = torch.linalg.eigvalsh((M + M.T) / 2)
    return lam.clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}), as a Python float.

    Inputs are numpy arrays or tensors, mu (D,) and sigma (D, D); the work is done in float64.
    The exact value is >= 0; round-off can push a value near 0 slightly negative, so the
    result is clamped at 0.
    """
    mu1, sigma1, mu2, sigma2 = (_as_float64(a) for a in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature sizes differ: {tuple(mu1.shape)} vs {tuple(mu2.shape)}")
    # Heusel et al. 2017 (FID, which Handout A 4(c) asks for): ||mu_1 - mu_2||^2 + Tr S_1 + Tr S_2
    #                                                          - 2 Tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}
    mean_term = ((mu1 - mu2) ** 2).sum()
    cov_term = torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(mean_term + cov_term), 0.0)


class FeatureStats:
    """Running mean and covariance of features, fed batch by batch (`update`), in float64.

    Keeps only sum(f - c) and sum((f - c)(f - c)^T) for a fixed shift c (the first batch's
    mean; the covariance does not depend on c, and the shift avoids cancellation), so 10,000
    x 2048 Inception features never need to sit in memory at once. Sums stay on the device the
    features come from.
    """

    def __init__(self):
        self.count = 0
        self.shift = self.sum = self.sum_outer = None

    def update(self, features):
        """Add a batch of features, shape (B, D)."""
        f = torch.as_tensor(features).detach().reshape(len(features), -1).to(torch.float64)
        if self.shift is None:
            self.shift = f.mean(0)
            self.sum = torch.zeros_like(self.shift)
            self.sum_outer = torch.zeros(len(self.shift), len(self.shift), dtype=torch.float64,
                                         device=f.device)
        f = f - self.shift.to(f.device)
        self.sum += f.sum(0).to(self.sum.device)
        self.sum_outer += (f.T @ f).to(self.sum.device)  # (D, D)
        self.count += len(f)
        return self

    def mean_cov(self):
        """(mu, sigma) as float64 CPU tensors; sigma is the unbiased (N - 1) covariance, like np.cov."""
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.count}")
        n = self.count
        mean_c = self.sum / n  # mean of f - c
        sigma = (self.sum_outer - n * torch.outer(mean_c, mean_c)) / (n - 1)
        return (mean_c + self.shift).cpu(), sigma.cpu()


def fd_from_features(a, b):
    """Fréchet distance between the Gaussians fitted to two feature sets a (N, D) and b (M, D)."""
    mu_a, sigma_a = FeatureStats().update(a).mean_cov()
    mu_b, sigma_b = FeatureStats().update(b).mean_cov()
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def mean_pairwise_distance(f, chunk=1024):
    """Mean of ||f_i - f_j||_2 over pairs i != j of a feature set (N, D): its spread, or "diversity".

    Computed in float64 row chunks, so the N x N distance matrix never exists at once.
    """
    f = torch.as_tensor(f).detach().to(torch.float64)
    n = len(f)
    if n < 2:
        raise ValueError(f"need at least 2 samples for a pairwise distance, got {n}")
    total = sum(torch.cdist(f[s:s + chunk], f).sum().item() for s in range(0, n, chunk))
    return total / (n * (n - 1))  # the diagonal (i == j) adds 0
