"""Handout A 2(b): the noisy classifier p_φ(y | x_t, t) that guides a frozen DDPM (03_classifier_guidance.py).

The network is the down half of the UNet plus a time embedding (common.unet.TimeConditionedEncoder)
ending in K logits. It sees x_t at every noise level, so its gradient ∇_{x_t} log p_φ(y | x_t, t)
is meaningful all along the reverse chain; a classifier trained on clean images only is not.
`log_prob` is the guide interface of common/guidance.py. Timestep convention: common/schedules.py.
"""
import torch
import torch.nn.functional as F

from .schedules import ddpm_forward, sample_timesteps
from .unet import TimeConditionedEncoder


class NoisyClassifier(TimeConditionedEncoder):
    """p_φ(y | x_t, t): forward(x_t, t/T) gives (B, K) logits; log_prob makes it a guide."""

    def __init__(self, in_channels=1, hidden=32, image_size=28, num_classes=10):
        super().__init__(in_channels, hidden, image_size, out_features=num_classes)

    def log_prob(self, xt, t_frac, y):
        """log p_φ(y | x_t, t), shape (B,); y is a (B,) tensor of labels or one int for all."""
        log_p = F.log_softmax(self(xt, t_frac).float(), dim=1)              # (B, K)
        y = torch.as_tensor(y, device=xt.device).expand(len(xt))
        return log_p.gather(1, y.reshape(-1, 1)).squeeze(1)


def noisy_classifier_loss(clf, x0, y, sched, t=None):
    """Handout A 2(b): t ~ U{1..T}, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, cross-entropy of p_φ(y | x_t, t).

    Returns (mean loss, logits); pass t (B,) to fix the timesteps (evaluation).
    """
    if t is None:
        t = sample_timesteps(len(x0), sched.T, x0.device)             # t ~ U{1, ..., T}
    eps = torch.randn_like(x0)                                          # ε ~ N(0, I)
    xt = ddpm_forward(x0, t, sched.alpha_bar, eps)                      # the forward process q(x_t | x_0)
    logits = clf(xt, t.float() / sched.T).float()                       # (B, K)
    return F.cross_entropy(logits, y), logits
