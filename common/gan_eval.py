"""Samples, figures and numbers of the GAN scripts (Handout A 3(c) and 4(c)).

generate() runs G in eval mode (batch norm uses its running statistics), in batches.
FD-judge (common/judge.py: Fréchet distance over judge-classifier features, NOT FID) is
always computed; FID only when the FID Inception weights are on this machine (--inception-weights,
$FID_INCEPTION_WEIGHTS or torch's hub cache, where `python -m common.inception_weights` fetches them
once), else the tables say FID_NA. Both judge exactly what
samples_<model>.npz holds (8-bit pixels), so `python -m common.fid fashion-test samples_<model>.npz`
reproduces metrics.json.
"""
import numpy as np
import torch

from .data import FASHION_CLASSES, as_saved, to_uint8
from .files import save_npz, write_csv
from .inception_weights import inception_available
from .plotting import save_curves, save_mosaic
from .utils import autocast

FID_NA = "n/a (no Inception weights)"
FETCH_WEIGHTS = "python -m common.inception_weights"  # fetches the FID Inception weights once
MODEL_NAMES = {"dcgan": "DCGAN", "wgan": "WGAN (clipping)", "wgangp": "WGAN-GP", "cgan": "cGAN"}


@torch.no_grad()
def generate(G, z, y=None, batch=1000):
    """x̃ = G(z[, y]) as float32 (N, 1, 28, 28) in [-1, 1], on z's device."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(z), batch):
        with autocast(z.device):
            out.append(G(z[i:i + batch], None if y is None else y[i:i + batch]).float())
    G.train(was_training)
    return torch.cat(out)


def class_rows(n, device):
    """Labels for a cGAN grid: class k fills row k, n // 10 columns -> (10 · (n // 10),) int64."""
    return torch.arange(len(FASHION_CLASSES), device=device).repeat_interleave(max(1, n // 10))


def save_class_grid(G, z, path, title):
    """Handout A 4(c)(i): cGAN samples of every class, one row per class name (column j: the same z)."""
    y = class_rows(len(z), z.device)
    per = len(y) // len(FASHION_CLASSES)
    z = z[:per].repeat(len(FASHION_CLASSES), 1)  # the same z in every row: only the label changes
    save_mosaic(to_uint8(generate(G, z, y)), path, ncols=per, title=title, row_labels=FASHION_CLASSES)


def save_epoch_grid(gan, name, epoch, z_fixed, out):
    """samples_<name>_epoch_<E>.png from the fixed noise."""
    path, title = out / f"samples_{name}_epoch_{epoch:03d}.png", f"{name}, epoch {epoch} (fixed noise)"
    if gan.cfg["conditional"]:
        save_class_grid(gan.G, z_fixed, path, title)
    else:
        save_mosaic(to_uint8(generate(gan.G, z_fixed)), path, ncols=10, title=title)


def write_losses_csv(path, histories):
    """losses.csv: one row per D step of every run; g_loss on the rows where G was updated too."""
    rows = [["model", "epoch", "step", "d_loss", "g_loss"]]
    for name, history in histories.items():
        step, n = 0, history["n_critic"]
        for epoch, (d_losses, g_losses) in enumerate(zip(history["d"], history["g"]), start=1):
            for i, d in enumerate(d_losses, start=1):
                g = g_losses[i // n - 1] if i % n == 0 and i // n <= len(g_losses) else ""
                rows.append([name, epoch, step + i, f"{d:.6f}", g if g == "" else f"{g:.6f}"])
            step += len(d_losses)
    write_csv(rows, path)


def save_loss_curve(history, path, title):
    """D and G loss against the D step (G is updated every n_critic-th step), labelled axes."""
    d = np.concatenate([np.asarray(v, dtype=float) for v in history["d"]]) if history["d"] else np.zeros(0)
    g_steps, offset, n = [], 0, history["n_critic"]
    for d_losses, g_losses in zip(history["d"], history["g"]):
        g_steps.extend(offset + n * np.arange(1, len(g_losses) + 1))
        offset += len(d_losses)
    g = np.concatenate([np.asarray(v, dtype=float) for v in history["g"]]) if history["g"] else np.zeros(0)
    save_curves({"D loss": (np.arange(1, len(d) + 1), d), "G loss": (np.asarray(g_steps), g)}, path,
                xlabel="training step (D updates)", ylabel="batch loss", title=title)


def fid_note(dry_run, weights=None):
    """metrics.json's word on FID: why it is missing, or what it is (weights: --inception-weights)."""
    if dry_run:
        return "a dry run computes no FID (its 'real' images are synthetic); FD-judge is not FID"
    if not inception_available(weights):
        return (f"FID needs the FID Inception weights: run `{FETCH_WEIGHTS}` once, or pass --inception-weights PATH; "
                f"FD-judge is not FID")
    return "FID over the FID Inception network's features (pytorch-fid's weights); FD-judge is not FID"


def metrics_header(args, judge, x_test):
    """The start of both GAN scripts' metrics.json: reference set, FID note, judge, the test set's spread."""
    return {"reference": f"{len(x_test)} Fashion-MNIST test images" if not args.dry_run else "synthetic",
            "fid_note": fid_note(args.dry_run, args.inception_weights), "judge": judge.card,
            "real_test": {"judge_diversity": judge.diversity(x_test)}, "models": {}}


def fid_or_na(x_fake, n_real, device, data_dir, dry_run=False, weights=None):
    """FID of x_fake vs the first n_real Fashion-MNIST test images if the Inception weights are here, else FID_NA.
    `weights`: --inception-weights (None: $FID_INCEPTION_WEIGHTS, else torch's hub cache).

    The real images' Inception statistics are cached (results/fid_stats/), so only x_fake is run through
    Inception. A dry run never computes FID (its "real" images are synthetic).
    """
    if dry_run:
        return FID_NA
    if not inception_available(weights):
        return FID_NA
    from .fid import fid_vs_real  # imported here: torchvision's model zoo (the Inception) takes seconds to import
    return fid_vs_real(x_fake, "fashion", "test", device, weights=weights, n=n_real, data_dir=data_dir)


def evaluate_samples(judge, x_fake, x_real, args, device):
    """Handout A 4(c): FD-judge (always) and FID (if possible) of generated vs real test images, plus spread,
    of the samples as samples_<model>.npz holds them (as_saved), so the .npz reproduces these numbers."""
    x_fake = as_saved(x_fake)
    return {"n": len(x_fake), "fd_judge": judge.fd(x_fake, x_real),
            "fid": fid_or_na(x_fake, len(x_real), device, args.data_dir, args.dry_run, args.inception_weights),
            "judge_diversity": judge.diversity(x_fake)}


def save_samples_npz(path, x, y=None):
    """`images` uint8 (N, 28, 28) [and `labels` int64 (N,)]."""
    extra = {} if y is None else {"labels": y.cpu().numpy()}
    save_npz(path, images=to_uint8(x), **extra)
