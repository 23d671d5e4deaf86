"""The DDPM training step (Handout D Algorithms 1 and 3) and the epoch loop (its state: train_state.py).

The loop keeps the whole dataset as one tensor on the device and slices batches out
of it; losses stay on the device and are synchronised once every `check_every` steps
(to print progress and stop on NaN), never once per step.
"""
import time

import numpy as np
import torch
import torch.nn.functional as F

from .data import batches
from .files import write_csv
from .plotting import save_loss_curves
from .schedules import ddpm_forward, sample_timesteps
from .train_state import save_state
from .utils import Progress, autocast, check_finite, interruptible


def ddpm_loss(model, x0, sched, y=None, p_uncond=0.0, num_classes=10, loss="l2"):
    """One training objective evaluation.

    y is None: Handout D Algorithm 1, lines 4–8.  y given: Algorithm 3, lines 4–10.
    loss='l1' is Handout E's Algorithm 1 (lines 3–6: t, ε, x_t, then a step on ‖ε − ε_θ‖₁); Handouts D and
    A use the squared error. Line numbers below are Handout D's.
    """
    B = len(x0)
    t = sample_timesteps(B, sched.T, x0.device)             # Alg. 1 line 4 (Alg. 3 line 6): t ~ U{1..T}
    eps = torch.randn_like(x0)                                # line 5 (7): ε ~ N(0, I)
    xt = ddpm_forward(x0, t, sched.alpha_bar, eps)            # line 6 (8): x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε
    t_frac = t.float() / sched.T
    with autocast(x0.device):
        if y is None:
            eps_pred = model(xt, t_frac)                      # line 7: ε̂ = ε_θ(x_t, t)
        else:
            c = F.one_hot(y, num_classes)                     # Alg. 3 line 4: one-hot c
            keep = torch.rand(B, device=x0.device) >= p_uncond  # line 5: drop c w.p. p_uncond
            eps_pred = model(xt, t_frac, c, keep)             # line 9: ε̂ = ε_θ(x_t, t, c)
    # Alg. 1 line 8 / Alg. 3 line 10: gradient step on ||ε − ε̂||² (or ||ε − ε̂||₁, Handout E)
    if loss == "l1":
        return F.l1_loss(eps_pred.float(), eps)
    return F.mse_loss(eps_pred.float(), eps)


def fit_epoch(model, optimizer, scaler, loss_fn, data, batch_size, prefix, metric="loss {:.4f}",
              check_every=50, **loss_args):
    """One shuffled pass over `data`: the training loop of the DDPMs, 03's p_φ and 06's age regressor.

    data is a dict of equal-length tensors on one device, e.g. {"x0": x, "y": labels}. Each step
    slices the same indices out of every tensor and calls loss_fn(model, x0=..., y=..., **loss_args).
    (A function as an argument, against the house style's "no callbacks": it keeps one loop for
    three losses, and each loss stays a plain module-level function that cites its handout lines.)
    `metric` formats the running mean loss in the progress line. Returns the batch losses (CPU tensor).
    """
    model.train()
    x = next(iter(data.values()))
    n_steps = -(-len(x) // batch_size)
    progress, losses = Progress(n_steps, prefix=prefix), []
    for step, idx in enumerate(batches(len(x), batch_size, x.device), start=1):
        loss = loss_fn(model, **{name: tensor[idx] for name, tensor in data.items()}, **loss_args)
        # the gradient step (Algorithm 1 line 8); the scaler only acts under fp16 autocast on CUDA
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
        if step % check_every == 0 or step == n_steps:
            recent = torch.stack(losses[-check_every:]).mean().item()   # one sync per check_every steps
            check_finite(recent, prefix, step)
            progress.update(step, min(step * batch_size, len(x)) - progress.images, extra=metric.format(recent))
    return torch.stack(losses).float().cpu()


def train_one_epoch(model, optimizer, scaler, x, y, sched, epoch, batch_size, p_uncond=0.0, loss="l2"):
    """One epoch of Algorithm 1 (y=None, unconditional) or Algorithm 3 (y = labels) over x."""
    data = {"x0": x} if y is None else {"x0": x, "y": y}
    return fit_epoch(model, optimizer, scaler, ddpm_loss, data, batch_size, f"epoch {epoch}",
                     sched=sched, p_uncond=p_uncond, loss=loss)


# F.mse_loss: ‖ε − ε̂‖² / (C·H·W), averaged over the batch
DDPM_YLABEL = "loss: mean of (ε − ε̂)² over pixels"


def epoch_grid_path(out, epoch):
    return out / f"samples_epoch_{epoch:03d}.png"


def undrawn_grid(training, sample_epochs, out):
    """[e] when --resume starts after epoch e, e wants a grid, and its file is missing (Ctrl-C came while it was
    being drawn, after e's checkpoint was saved), else []. The checkpoint holds exactly epoch e's weights, so
    a script that chains this before run_epochs draws the same grid the interrupted run would have."""
    e = training.start
    return [e] if e in sample_epochs and not epoch_grid_path(out, e).is_file() else []


def run_epochs(training, loss_fn, data, name="epoch", metric="loss {:.4f}", ylabel=DDPM_YLABEL,
               file_prefix="", how_to_continue="continue with --resume", **loss_args):
    """Train epochs start+1 .. args.epochs, each one fit_epoch(loss_fn, data, **loss_args) pass; yields
    each epoch number once it is checkpointed, so the caller can draw a grid after it.

    Each epoch reseeds from (seed, epoch), so `--resume` continues exactly as a straight run would.
    After every epoch: the checkpoint, then <file_prefix>losses.csv and <file_prefix>loss_curve.png.
    Ctrl-C (or SIGTERM) during an epoch ends the run with one line; the checkpoint of the last finished
    epoch is intact. (While the caller draws its grid the generator is paused: the scripts' own
    interruptible() around main() gives the one line there.)
    """
    args, history = training.args, training.history
    for epoch in range(training.start + 1, args.epochs + 1):
        with interruptible(interrupted_note(training.path, epoch, how_to_continue)):
            torch.manual_seed(args.seed + 1000 * epoch)
            t0 = time.time()
            losses = fit_epoch(training.model, training.optimizer, training.scaler, loss_fn, data,
                               args.batch_size, f"{name} {epoch}", metric, **loss_args)
            training.lr_scheduler.step()
            history["batch"].append(losses.tolist())
            history["epoch"].append(losses.mean().item())
            history["seconds"].append(time.time() - t0)
            save_state(training.path, training.model, training.optimizer, training.lr_scheduler,
                       training.scaler, epoch, history, args)
            write_loss_outputs(training.path.parent, history, ylabel, file_prefix)
        print(f"{name} {epoch}/{args.epochs}: mean {metric.format(history['epoch'][-1])} "
              f"({history['seconds'][-1]:.0f} s)", flush=True)
        yield epoch
    if training.start >= args.epochs:   # nothing was left to train: still write the finished run's curves
        write_loss_outputs(training.path.parent, history, ylabel, file_prefix)


def interrupted_note(path, epoch, how_to_continue):
    """What a Ctrl-C during `epoch` leaves: the checkpoint of epoch − 1, or (in epoch 1) nothing to resume."""
    if epoch == 1:
        return "stopped in epoch 1, before any checkpoint was saved: start the same command again"
    return f"the last finished epoch is saved in {path}; {how_to_continue}"


def train_epochs(training, loss_fn, data, **kwargs):
    """run_epochs to the end, for a model with nothing to draw between its epochs."""
    for _ in run_epochs(training, loss_fn, data, **kwargs):
        pass


def write_losses_csv(path, history):
    """losses.csv: one row per batch with its epoch, step and loss."""
    rows, step = [["epoch", "step", "batch_loss"]], 0
    for epoch, epoch_losses in enumerate(history["batch"], start=1):
        for value in epoch_losses:
            step += 1
            rows.append([epoch, step, f"{value:.6f}"])
    write_csv(rows, path)


def write_loss_outputs(out, history, ylabel=DDPM_YLABEL, file_prefix=""):
    """<file_prefix>losses.csv and <file_prefix>loss_curve.png (batch and epoch loss, Handout D §2.3
    deliverable 1)."""
    if history["epoch"]:
        write_losses_csv(out / f"{file_prefix}losses.csv", history)
        save_loss_curves(np.concatenate(history["batch"]), history["epoch"], out / f"{file_prefix}loss_curve.png",
                         ylabel=ylabel, title="training loss")
