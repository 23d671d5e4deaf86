"""Handout A Problems 3–4 (worked in Handout B Problem 1): the GANs of 04_dcgan_wgan.py and 05_cgan_wgangp_fid.py.

    Generator, Discriminator   3(a): one dense + three transposed convs; three convs + one dense (small=True: the
                               footnote's one conv layer); 4(a): their conditional versions
    the losses                 3(a) d_loss_bce, g_loss_minimax, g_loss_nonsaturating; 3(b) wgan_critic_loss,
                               wgan_generator_loss. Each is to be minimised; E[·] is a batch mean
    clip_weights_              3(b): every critic parameter clipped to [−c, c]
    gradient_penalty           4(b): λ E[(‖∇D(x̂)‖₂ − 1)²]
    full_batches               an epoch's number of batches, at least n_critic
    generate                   G in eval mode (BatchNorm's running statistics), in batches
    write_losses_csv,          the loss record: losses.csv, and the loss curve
    save_loss_curve

The training steps, each model's D (critic) step and G step under its objective, are in the scripts: dcgan_step
and wgan_step in 04_dcgan_wgan.py, cgan_step and wgangp_step in 05_cgan_wgangp_fid.py. So are each model's
optimiser and its settings (lr, betas, n_critic, dropout, c, λ), as flags or on the line that builds it.

DCGAN's D returns a logit l, D(x) = σ(l), its logs in the stable forms log σ(l) = −softplus(−l), log(1 − σ(l)) =
−softplus(l); a WGAN critic returns an unbounded score. GAN: https://arxiv.org/abs/1406.2661, DCGAN:
https://arxiv.org/abs/1511.06434, WGAN: https://arxiv.org/abs/1701.07875, WGAN-GP: https://arxiv.org/abs/1704.00028,
cGAN: https://arxiv.org/abs/1411.1784.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .plotting import save_curves
from .run import autocast, fail, write_csv

NUM_CLASSES = 10
NORMS = ("batch", "layer", "instance", "none")
LABEL_INJECTIONS = ("channels", "dense")


# --- the networks ---

def norm_layer(norm, channels):
    """D's normalisation after a conv. WGAN-GP's critic must not use 'batch' (Handout A 4(b)): the penalty is
    per sample, and batch norm mixes the samples of a batch."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":   # each sample over all of (C, H, W), with a per-channel scale and shift
        return nn.GroupNorm(1, channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


# Handout A 3(a) fixes the layers and dropout; the rest follows Radford et al.: BatchNorm, ReLU, a tanh output in G,
# LeakyReLU(0.2) in D, no normalisation on D's first conv (Handout B 1(a): PReLU, BatchNorm on all of D's convs).
class Generator(nn.Module):
    """G(z[, y]): (B, z_dim) noise [+ (B,) labels] -> (B, 1, 28, 28) images in [-1, 1]."""

    def __init__(self, z_dim=100, hidden=128, small=False, conditional=False):
        super().__init__()
        self.hidden, self.conditional = hidden, conditional
        in_dim = z_dim + (NUM_CLASSES if conditional else 0)
        self.dense = nn.Sequential(nn.Linear(in_dim, hidden * 7 * 7), nn.BatchNorm1d(hidden * 7 * 7), nn.ReLU())
        if small:   # the footnote: one transposed conv, 7×7 -> 28×28 in one stride-4 step
            self.convs = nn.ConvTranspose2d(hidden, 1, 8, stride=4, padding=2)  # (B, 1, 28, 28)
        else:
            H = hidden
            self.convs = nn.Sequential(
                nn.ConvTranspose2d(H, H // 2, 4, 2, 1), nn.BatchNorm2d(H // 2), nn.ReLU(),       # (B, H/2, 14, 14)
                nn.ConvTranspose2d(H // 2, H // 4, 4, 2, 1), nn.BatchNorm2d(H // 4), nn.ReLU(),  # (B, H/4, 28, 28)
                nn.ConvTranspose2d(H // 4, 1, 3, 1, 1))                                          # (B, 1, 28, 28)

    def forward(self, z, y=None):
        if self.conditional:
            # Handout A 4(a): concatenate the one-hot class label to the noise vector
            z = torch.cat([z, F.one_hot(y, NUM_CLASSES).to(z.dtype)], dim=1)      # (B, z_dim + 10)
        h = self.dense(z).view(len(z), self.hidden, 7, 7)                   # (B, H, 7, 7)
        return torch.tanh(self.convs(h))                                    # (B, 1, 28, 28) in [-1, 1]


class Discriminator(nn.Module):
    """D(x[, y]): (B, 1, 28, 28) images [+ (B,) labels] -> (B,) logits (DCGAN) or critic scores (WGAN). Dropout
    after each conv: Handout A 3(a)'s rate is the scripts' --dropout."""

    def __init__(self, hidden=128, small=False, norm="batch", dropout=0.0, conditional=False,
                 label_inject="channels"):
        super().__init__()
        if label_inject not in LABEL_INJECTIONS:
            raise ValueError(f"label_inject must be one of {LABEL_INJECTIONS}, got {label_inject!r}")
        self.conditional, self.label_inject = conditional, label_inject
        in_ch = 1 + (NUM_CLASSES if conditional and label_inject == "channels" else 0)
        extra = NUM_CLASSES if conditional and label_inject == "dense" else 0
        H = hidden
        if small:   # the footnote: one conv layer
            self.convs = nn.Sequential(nn.Conv2d(in_ch, H, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout))
            features = H * 14 * 14                                                             # (B, H, 14, 14)
        else:
            self.convs = nn.Sequential(
                nn.Conv2d(in_ch, H // 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout),          # (B, H/4, 14, 14)
                nn.Conv2d(H // 4, H // 2, 4, 2, 1), norm_layer(norm, H // 2), nn.LeakyReLU(0.2),
                nn.Dropout(dropout),                                                                # (B, H/2, 7, 7)
                nn.Conv2d(H // 2, H, 3, 2, 1), norm_layer(norm, H), nn.LeakyReLU(0.2), nn.Dropout(dropout))
            features = H * 4 * 4                                                                    # (B, H, 4, 4)
        self.dense = nn.Linear(features + extra, 1)

    def forward(self, x, y=None):
        if self.conditional and self.label_inject == "channels":
            # Handout A 4(a): the one-hot label broadcast to the image size, as 10 extra input channels
            c = F.one_hot(y, NUM_CLASSES).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, 10, 28, 28)
            x = torch.cat([x, c], dim=1)                                             # (B, 11, 28, 28)
        h = self.convs(x).flatten(1)                                                 # (B, features)
        if self.conditional and self.label_inject == "dense":
            # Handout A 4(a), the alternative: concatenate the one-hot label to the dense layer's input
            h = torch.cat([h, F.one_hot(y, NUM_CLASSES).to(h.dtype)], dim=1)        # (B, features + 10)
        return self.dense(h).squeeze(1)                                              # (B,)


# --- the losses (each to minimise) ---

def d_loss_bce(logit_real, logit_fake):
    # Handout A 3(a), the original loss (B 1(a) trains it as BCE): D maximises E[log D(x)] + E[log(1 − D(G(z)))],
    # i.e. minimises BCE(D(x), 1) + BCE(D(G(z)), 0) = softplus(−l_real) + softplus(l_fake)
    return F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()


def g_loss_minimax(logit_fake):
    # Goodfellow et al. 2014, the literal minimax game: G minimises E[log(1 − D(G(z)))]
    return -F.softplus(logit_fake).mean()


def g_loss_nonsaturating(logit_fake):
    # Goodfellow et al. 2014, §3: G maximises E[log D(G(z))]. Early on D rejects the fakes, D(G(z)) ≈ 0, where
    # log(1 − D) is flat (gradient −σ(l) ≈ 0 in the logit); −log D has gradient −(1 − σ(l)) ≈ −1 there
    return F.softplus(-logit_fake).mean()


def wgan_critic_loss(d_real, d_fake):
    # Handout A 3(b) (B 1(b)): L_D = −E_x[D(x)] + E_z[D(G(z))]
    return d_fake.mean() - d_real.mean()


def wgan_generator_loss(d_fake):
    # Handout A 3(b) (B 1(b)): L_G = −E_z[D(G(z))]
    return -d_fake.mean()


@torch.no_grad()
def clip_weights_(D, c):
    # Handout A 3(b): for p in discriminator.parameters(): p.clamp_(−max_amp, max_amp)
    for p in D.parameters():
        p.clamp_(-c, c)


def gradient_penalty(D, x_real, x_fake, lam, y=None, eps=None):
    """Handout A 4(b): λ E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²], one ε and one gradient norm per sample. In fp32 with
    autocast off: it differentiates D twice, and a half-precision gradient's norm is too coarse."""
    if eps is None:
        # Handout A 4(b): ε ~ U[0, 1], one per sample, broadcast over its pixels
        eps = torch.rand(len(x_real), 1, 1, 1, device=x_real.device)
    # Handout A 4(b): x̂ = ε x + (1 − ε) x̃, a point between a real and a fake image
    x_hat = (eps * x_real.float() + (1 - eps) * x_fake.float().detach()).requires_grad_(True)
    with torch.autocast(x_real.device.type, enabled=False):
        d_hat = D(x_hat, y)                                                    # (B,)
    # D scores each sample alone (no batch norm), so the gradient of the sum w.r.t. x̂_i is ∇D(x̂_i);
    # create_graph: the penalty itself is differentiated in D's step
    grad, = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)        # (B, 1, 28, 28)
    grad_norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()                # (B,); +1e-12: sqrt'(0) is inf
    return lam * ((grad_norm - 1) ** 2).mean()


# --- training: an epoch's batches; samples ---

def full_batches(n_images, batch_size, n_critic):
    """An epoch's number of full batches (BatchNorm needs more than one sample, so the rest is dropped), at least
    n_critic: G steps once per n_critic of them."""
    n = n_images // batch_size
    if n < n_critic:
        fail(f"--batch-size {batch_size} leaves {n} full batches of the {n_images:,} images, fewer than --n-critic "
             f"{n_critic}: G would never be updated; lower --batch-size or --n-critic")
    return n


@torch.no_grad()
def generate(G, z, y=None, batch=1000):
    """x̃ = G(z[, y]) as float32 (N, 1, 28, 28) in [-1, 1], in eval mode (BatchNorm's running statistics)."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(z), batch):
        with autocast(z.device):
            out.append(G(z[i:i + batch], None if y is None else y[i:i + batch]).float())
    G.train(was_training)
    return torch.cat(out)


# --- the loss record: history = {"n_critic": n, "d": [[D loss per step] per epoch], "g": [[G loss ...]]} ---

def write_losses_csv(histories, path):
    """losses.csv: one row per D step of every model; g_loss on the rows where G was updated too."""
    rows = [["model", "epoch", "step", "d_loss", "g_loss"]]
    for name, history in histories.items():
        step, n = 0, history["n_critic"]
        for epoch, (d_losses, g_losses) in enumerate(zip(history["d"], history["g"]), start=1):
            for i, d in enumerate(d_losses, start=1):
                g = f"{g_losses[i // n - 1]:.6f}" if i % n == 0 and i // n <= len(g_losses) else ""
                rows.append([name, epoch, step + i, f"{d:.6f}", g])
            step += len(d_losses)
    write_csv(rows, path)


def save_loss_curve(history, path, title):
    """D and G loss against the D step (G steps on every n_critic-th), axes labelled."""
    d = np.asarray([v for epoch in history["d"] for v in epoch], dtype=float)
    g_steps, offset, n = [], 0, history["n_critic"]
    for d_losses, g_losses in zip(history["d"], history["g"]):
        g_steps.extend(offset + n * np.arange(1, len(g_losses) + 1))
        offset += len(d_losses)
    g = np.asarray([v for epoch in history["g"] for v in epoch], dtype=float)
    save_curves({"D loss": (np.arange(1, len(d) + 1), d), "G loss": (np.asarray(g_steps), g)}, path,
                xlabel="training step (D updates)", ylabel="batch loss", title=title)
