"""The GAN training loop Handout A Problems 3 and 4 share (04_dcgan_wgan.py, 05_cgan_wgangp_fid.py).

A run's recipe, settings, networks and checkpoint are common/gan_runs.py's. One training step is
    (1) update D: one step on the D/critic loss (then clip the weights, for WGAN),
    (2) every n_critic-th step, update G on the same z against the updated D.
Losses stay on the device; they are synchronised once every `check_every` steps to print
progress, stop on a NaN or exploding loss, and warn when the discriminator wins.
"""
import math
import time

import torch

from .data import batches
from .gan_eval import save_epoch_grid
from .gan_losses import (clip_weights_, d_loss_bce, g_loss_minimax, g_loss_nonsaturating, gradient_penalty,
                         wgan_critic_loss, wgan_generator_loss, wgan_gp_critic_loss)
from .gan_runs import build_gan, check_batch_size, checkpoint_path, load_gan_state, new_history, save_gan_state
from .utils import Progress, autocast, fail, interruptible

D_WINS_LOSS, D_WINS_CHECKS = 0.05, 4  # warn when D's BCE loss stays below this for this many checks


def discriminator_loss(gan, x_real, x_fake, y):
    with autocast(x_real.device):
        d_real, d_fake = gan.D(x_real, y).float(), gan.D(x_fake, y).float()  # (B,), (B,)
    if gan.cfg["loss"] == "bce":  # maximise log D(x) + log(1 − D(G(z)))
        return d_loss_bce(d_real, d_fake)
    if gan.cfg["loss"] == "wgan":  # maximise D(x) − D(G(z))
        return wgan_critic_loss(d_real, d_fake)
    penalty = gradient_penalty(gan.D, x_real, x_fake, y, gan.cfg["gp_lambda"])  # fp32, see its docstring
    return wgan_gp_critic_loss(d_real, d_fake, penalty)


def generator_loss(cfg, d_fake):
    if cfg["loss"] != "bce":
        return wgan_generator_loss(d_fake)  # maximise D(G(z))
    if cfg["g_loss"] == "minimax":
        return g_loss_minimax(d_fake)  # minimise log(1 − D(G(z)))
    return g_loss_nonsaturating(d_fake)  # maximise log D(G(z))


def optimizer_step(loss, optimizer, scaler):
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_step(gan, x_real, y, g_step):
    """One D step and, if g_step, one G step. Returns (D loss, G loss or None) as device tensors."""
    cfg, device = gan.cfg, x_real.device
    y = y if cfg["conditional"] else None  # cGAN: fakes are drawn for the batch's own labels
    z = torch.randn(len(x_real), cfg["z_dim"], device=device)
    with torch.set_grad_enabled(g_step), autocast(device):
        x_fake = gan.G(z, y)  # (B, 1, 28, 28); keeps its graph only when G is updated below
    # (1) Update D on real x and fake G(z) (detached: this step does not move G)
    d_loss = discriminator_loss(gan, x_real, x_fake.detach(), y)
    optimizer_step(d_loss, gan.opt_D, gan.scaler_D)
    if cfg["loss"] == "wgan":
        clip_weights_(gan.D, cfg["clip"])  # Handout A 3(b): clip after every critic step
    if not g_step:
        return d_loss.detach(), None
    # (2) Update G through the freshly updated D
    with autocast(device):
        d_fake = gan.D(x_fake, y).float()
    g_loss = generator_loss(cfg, d_fake)
    optimizer_step(g_loss, gan.opt_G, gan.scaler_G)
    return d_loss.detach(), g_loss.detach()


def check_losses(name, cfg, d_recent, g_recent, epoch, step, watch):
    """One host-device sync: stop on NaN/inf/exploding losses; warn if D's BCE stays ≈ 0. Returns means."""
    d = torch.stack(d_recent).mean().item()
    g = torch.stack(g_recent).mean().item() if g_recent else 0.0
    for label, value in (("D", d), ("G", g)):
        if not math.isfinite(value) or abs(value) > 1e6:
            fail(f"{name} diverged: the {label} loss became {value:.4g} at epoch {epoch}, step {step}; "
                 f"try a lower --lr (the checkpoint of epoch {epoch - 1} is intact)")
    watch["low"] = watch["low"] + 1 if cfg["loss"] == "bce" and d < D_WINS_LOSS else 0
    if watch["low"] == D_WINS_CHECKS:
        print(f"warning: {name} D loss ≈ {d:.3f} for {D_WINS_CHECKS * len(d_recent)} steps (epoch {epoch}): "
              f"the discriminator wins and G's gradients vanish", flush=True)
    return d, g


def train_one_epoch(gan, name, x, y, epoch, check_every=50):
    """One pass over (x, y) in shuffled full batches (BatchNorm needs > 1 sample, so the rest is dropped).

    Returns the D losses of every step and the G losses of every n_critic-th step (CPU tensors).
    """
    gan.G.train()
    gan.D.train()
    bs, n_critic = gan.cfg["batch_size"], gan.cfg["n_critic"]
    n_steps = len(x) // bs
    progress = Progress(n_steps, prefix=f"{name} epoch {epoch}")
    d_losses, g_losses, watch = [], [], {"low": 0}
    for step, idx in enumerate(batches(len(x), bs, x.device), start=1):
        if step > n_steps:
            break
        d_loss, g_loss = train_step(gan, x[idx], y[idx], g_step=step % n_critic == 0)
        d_losses.append(d_loss)
        if g_loss is not None:
            g_losses.append(g_loss)
        if step % check_every == 0 or step == n_steps:
            d, g = check_losses(name, gan.cfg, d_losses[-check_every:],
                                g_losses[-max(1, check_every // n_critic):], epoch, step, watch)
            progress.update(step, bs * step - progress.images, extra=f"D {d:.4f}  G {g:.4f}")
    return stack_to_cpu(d_losses), stack_to_cpu(g_losses)


def stack_to_cpu(losses):
    """A list of scalar device tensors -> one float CPU tensor (the epoch's only bulk transfer)."""
    return torch.stack(losses).float().cpu() if losses else torch.zeros(0)


def train_gan(name, cfg, x, y, out, device, z_fixed, resume=False, others=()):
    """Train run `name` for cfg['epochs'] epochs (continuing its checkpoint with resume). Returns (gan, history).

    After every epoch: checkpoint_<name>.pt and samples_<name>_epoch_<E>.png, drawn from the
    fixed noise z_fixed (a cGAN draws one row per class), so the grids are comparable across epochs.
    `others`: the names of the other runs the same command trains into `out` (for the Ctrl-C line).
    """
    path = checkpoint_path(out, name)
    check_batch_size(len(x), cfg["batch_size"], cfg["n_critic"])
    torch.manual_seed(cfg["seed"])  # the initial weights depend on the seed only
    gan, start, history = build_gan(cfg, device), 0, new_history(cfg)
    if resume and path.is_file():
        gan, start, history = load_gan_state(path, device, cfg)
    elif resume:
        print(f"--resume: no {path} yet, so {name} starts from scratch", flush=True)
    try:   # Ctrl-C, or SIGTERM (which the scripts' interruptible() around main() turns into a KeyboardInterrupt)
        train_epochs(gan, name, x, y, range(start + 1, cfg["epochs"] + 1), history, out, z_fixed)
    except KeyboardInterrupt:
        # what is saved is known only now (was an epoch finished?); interruptible() prints the line and exits 130
        other_paths = [checkpoint_path(out, n) for n in others if n != name]
        with interruptible(interrupted_hint(name, path, history, other_paths)):
            raise
    return gan, history


def train_epochs(gan, name, x, y, epochs, history, out, z_fixed):
    """The given epochs of run `name`, each followed by its checkpoint (history grows in place) and its grid."""
    for epoch in epochs:
        # reseed from (seed, epoch): --resume continues bit-exactly on the CPU (on CUDA, AMP and cuDNN's
        # kernel choice are not deterministic, so a resumed run is close, not identical)
        torch.manual_seed(gan.cfg["seed"] + 1000 * epoch)
        t0 = time.time()
        d_losses, g_losses = train_one_epoch(gan, name, x, y, epoch)
        history["d"].append(d_losses.tolist())
        history["g"].append(g_losses.tolist())
        history["seconds"].append(time.time() - t0)
        save_gan_state(checkpoint_path(out, name), gan, epoch, history)
        save_epoch_grid(gan, name, epoch, z_fixed, out)
        print(f"{name} epoch {epoch}/{gan.cfg['epochs']}: D {d_losses.mean():.4f}  G {g_losses.mean():.4f}  "
              f"({history['seconds'][-1]:.0f} s)", flush=True)


def interrupted_hint(name, path, history, other_paths):
    """What a Ctrl-C during run `name` leaves behind, and how to go on: with --resume once one of its epochs is
    saved (or one of the command's other runs is: --resume keeps it), else the same command without --resume."""
    if history["d"] and path.is_file():
        return f"the last finished epoch of {name} is saved in {path}; continue with --resume"
    saved = [p.name for p in other_paths if p.is_file()]
    if saved:
        return (f"no epoch of {name} finished, so nothing of it was saved; --resume keeps {', '.join(saved)} "
                f"and trains {name} from scratch")
    return f"no epoch of {name} finished, so nothing was saved; run the same command again without --resume"
