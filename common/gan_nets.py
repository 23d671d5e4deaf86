"""Handout A Problems 3–4: the GAN generator and discriminator (critic) for 28×28 Fashion-MNIST.

Generator (Problem 3(a)):      z -> one dense layer -> 7×7 feature map -> three transposed
                               convolutions -> (1, 28, 28), tanh so pixels lie in [-1, 1].
Discriminator (Problem 3(a)):  three convolutions -> one dense layer (the reverse order) -> one
                               logit (DCGAN) or one unbounded score (the WGAN critic).
small=True is the handout footnote's "just one conv layer" variant of both networks.

Options: dropout in the discriminator (Problem 3(a)); the critic's normalisation, 'batch'
for DCGAN/WGAN, 'layer' or 'instance' (or 'none') for WGAN-GP, which must not use batch norm
(Problem 4(b): the gradient penalty is per sample, batch norm mixes the samples of a batch).
Conditional versions (Problem 4(a), Mirza & Osindero 2014, https://arxiv.org/abs/1411.1784):
the one-hot label is concatenated to z, and given to the discriminator either as 10 constant
input channels ('channels') or concatenated to the dense layer's input ('dense').
Activations and normalisation follow the DCGAN guidelines (Radford et al. 2016,
https://arxiv.org/abs/1511.06434); see the comment above Generator.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
NORMS = ("batch", "layer", "instance", "none")
LABEL_INJECTIONS = ("channels", "dense")


def norm_layer(norm, channels):
    """The discriminator's normalisation after a conv layer."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        # one group: each sample normalised over all of (C, H, W) as LayerNorm does, but the learnable scale
        # and shift are per channel (C,), not per element (C, H, W) as nn.LayerNorm([C, H, W]) would have
        return nn.GroupNorm(1, channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def one_hot(y, dtype):
    return F.one_hot(y, NUM_CLASSES).to(dtype)


# Handout A 3(a) fixes only the layers (G: one dense + three conv; D: three conv + one dense) and dropout.
# The rest follows the DCGAN guidelines (Radford et al. 2016): G has BatchNorm + ReLU and a tanh output; D has
# LeakyReLU(0.2) and no normalisation on its first conv. Handout B 1(a)'s worked solution differs: PReLU in G
# and D, and BatchNorm on all three of D's convs. Kept as they are: the measured results come from these nets.
class Generator(nn.Module):
    """G(z[, y]): (B, z_dim) noise [+ (B,) labels] -> (B, 1, 28, 28) images in [-1, 1]."""

    def __init__(self, z_dim=100, width=128, small=False, conditional=False):
        super().__init__()
        self.width, self.conditional = width, conditional
        in_dim = z_dim + (NUM_CLASSES if conditional else 0)
        # the dense layer: z -> 7×7 map with `width` channels
        self.dense = nn.Sequential(nn.Linear(in_dim, width * 7 * 7), nn.BatchNorm1d(width * 7 * 7), nn.ReLU())
        if small:  # footnote: one (transposed) conv layer, 7×7 -> 28×28 in a single stride-4 step
            self.convs = nn.ConvTranspose2d(width, 1, 8, stride=4, padding=2)  # (B, 1, 28, 28)
        else:
            self.convs = nn.Sequential(
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1),  # (B, W/2, 14, 14)
                nn.BatchNorm2d(width // 2), nn.ReLU(),
                nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1),  # (B, W/4, 28, 28)
                nn.BatchNorm2d(width // 4), nn.ReLU(),
                nn.ConvTranspose2d(width // 4, 1, 3, 1, 1))  # (B, 1, 28, 28)

    def forward(self, z, y=None):
        if self.conditional:
            # Handout A 4(a): concatenate the one-hot class label to the noise vector
            z = torch.cat([z, one_hot(y, z.dtype)], dim=1)  # (B, z_dim + 10)
        h = self.dense(z).view(len(z), self.width, 7, 7)  # (B, W, 7, 7)
        return torch.tanh(self.convs(h))  # (B, 1, 28, 28) in [-1, 1]


class Discriminator(nn.Module):
    """D(x[, y]): (B, 1, 28, 28) images [+ (B,) labels] -> (B,) logits (DCGAN) or critic scores (WGAN)."""

    def __init__(self, width=128, small=False, norm="batch", dropout=0.3, conditional=False,
                 label_inject="channels"):
        super().__init__()
        self.conditional, self.label_inject = conditional, label_inject
        if label_inject not in LABEL_INJECTIONS:
            raise ValueError(f"label_inject must be one of {LABEL_INJECTIONS}, got {label_inject!r}")
        in_ch = 1 + (NUM_CLASSES if conditional and label_inject == "channels" else 0)
        extra = NUM_CLASSES if conditional and label_inject == "dense" else 0
        if small:  # footnote: one conv layer
            self.convs = nn.Sequential(
                nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout))  # (B, W, 14, 14)
            features = width * 14 * 14
        else:  # no normalisation on the first layer (as in DCGAN)
            self.convs = nn.Sequential(
                nn.Conv2d(in_ch, width // 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout),  # (B, W/4, 14, 14)
                nn.Conv2d(width // 4, width // 2, 4, 2, 1), norm_layer(norm, width // 2),
                nn.LeakyReLU(0.2), nn.Dropout(dropout),  # (B, W/2, 7, 7)
                nn.Conv2d(width // 2, width, 3, 2, 1), norm_layer(norm, width),
                nn.LeakyReLU(0.2), nn.Dropout(dropout))  # (B, W, 4, 4)
            features = width * 4 * 4
        self.dense = nn.Linear(features + extra, 1)

    def forward(self, x, y=None):
        if self.conditional and self.label_inject == "channels":
            # Handout A 4(a): the one-hot label broadcast to the image size, as 10 extra input channels
            c = one_hot(y, x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, 10, 28, 28)
            x = torch.cat([x, c], dim=1)  # (B, 11, 28, 28)
        h = self.convs(x).flatten(1)  # (B, features)
        if self.conditional and self.label_inject == "dense":
            # Handout A 4(a), the alternative: concatenate the one-hot label to the dense layer's input
            h = torch.cat([h, one_hot(y, h.dtype)], dim=1)  # (B, features + 10)
        return self.dense(h).squeeze(1)  # (B,)
