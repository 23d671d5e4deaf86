"""Handout C's models on the 48×48 faces: half-and-half merging and the age regressor (merging's reverse
process from z_t is common/samplers.py's ddpm_sample_from).
The face files themselves (loading, checks, UTKFace conversion): common/faces_data.py.
Timestep convention: see common/schedules.py.
"""
import torch
import torch.nn as nn

from .faces_data import SIZE
from .samplers import time_input
from .unet import TimeConditionedEncoder


# --- Problem 2: merging ---

def merge_halves(zt1, zt2):
    """Handout C 2(c): the left half (columns < W/2) of z_t⁽¹⁾ next to the right half of z_t⁽²⁾."""
    W = zt1.shape[-1]
    return torch.cat([zt1[..., :W // 2], zt2[..., W // 2:]], dim=-1)


# --- Problem 3: the age regressor f(z_t, t) ---

class AgeRegressor(nn.Module):
    """f(z_t, t) in years, with P(y | z_t) = N(f(z_t, t), 1) (Handout C 3).

    The body is the UNet's down half + time embedding (common.unet.TimeConditionedEncoder). It
    predicts a standardised age, f = age_mean + age_std · output, so the last layer starts near
    the right scale; f itself (and the MSE) is in years.
    """

    def __init__(self, in_channels=1, hidden=64, image_size=SIZE, age_mean=40.0, age_std=20.0):
        super().__init__()
        self.encoder = TimeConditionedEncoder(in_channels, hidden, image_size, out_features=1)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(float(age_std)))

    def forward(self, xt, t_frac):
        """xt: (B, C, H, W); t_frac: (B,) = t/T. Returns f(z_t, t), shape (B,)."""
        return self.age_mean + self.age_std * self.encoder(xt, t_frac)[:, 0]

    def log_prob(self, xt, t_frac, y):
        """log N(y; f(z_t, t), 1) = −(f − y)²/2 + const, shape (B,)."""
        return -0.5 * (self(xt, t_frac) - y) ** 2


@torch.no_grad()
def predict_age(regressor, xt, t, sched, batch=500):
    """f(z_t, t) in eval mode, in batches; t = 1 reads final samples or clean faces as z_1 (t → 0)."""
    regressor.eval()
    return torch.cat([regressor(xt[i:i + batch], time_input(t, sched, len(xt[i:i + batch]), xt.device)).float()
                      for i in range(0, len(xt), batch)])
