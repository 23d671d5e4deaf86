"""A training run's state (Handout D §2.3's checkpointing tip): the model, Adam with its decaying learning
rate and the AMP scaler, built fresh or restored from the checkpoint that `--resume` continues from.

Checkpoints are one dict written atomically (temp file + rename) after every epoch; a resume whose
architecture or training settings (all but --epochs) differ from the checkpoint's is refused with one
line before anything is trained, and a resume with another --epochs stretches the lr decay to it.
"""
import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .files import atomic_save
from .utils import fail, load_checkpoint, load_grad_scaler, make_grad_scaler

# what shaped the epochs already trained: a --resume must keep each that the script has (only --epochs may change)
TRAINING_MATCH = ("lr", "lr_decay_to", "batch_size", "seed", "beta_1", "beta_T", "p_uncond")


@dataclass
class Training:
    """One model's training: what start_training builds (or restores) and run_epochs advances."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    args: argparse.Namespace     # epochs, batch_size, seed, ...; saved in the checkpoint
    path: Path                   # the checkpoint, rewritten atomically after every epoch
    start: int = 0               # epochs already finished (a resumed run continues after them)
    history: dict = field(default_factory=lambda: {"batch": [], "epoch": [], "seconds": []})

    def plan(self):
        """What this run will train, for the first progress line."""
        if self.start >= self.args.epochs:
            return f"all {self.args.epochs} epochs already trained (sampling and figures only)"
        return f"epochs {self.start + 1}..{self.args.epochs}"


def save_state(path, model, optimizer, lr_scheduler, scaler, epoch, history, args):
    """Everything --resume needs, in one dict, written atomically."""
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "epoch": epoch, "history": history, "args": vars(args)}, path)


def load_state(path, model, optimizer, lr_scheduler, scaler, device, args, must_match=()):
    """Restore a checkpoint from save_state; returns (last finished epoch, loss history).

    `must_match` are (name, value) pairs of settings (architecture and training) that must equal the
    checkpoint's; a larger --epochs is allowed and stretches the lr decay (stretch_lr_decay), a smaller one is
    refused (the checkpoint has trained past it).
    """
    state = checked_state(path, device, must_match)
    if args.epochs < state["epoch"]:
        fail(f"{path} has {state['epoch']} epochs trained; --epochs {args.epochs} would claim fewer: "
             f"pass --epochs {state['epoch']} (resample) or more (train on)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:   # other layer names or shapes: another script's model
        fail(f"{path} holds another kind of model than {type(model).__name__} (another script's "
             f"checkpoint?); use another --out-dir")
    try:
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        load_grad_scaler(scaler, state["scaler"])
    except (KeyError, ValueError, RuntimeError) as e:  # a damaged or hand-edited checkpoint
        fail(f"{path}: its optimizer state does not fit this model ({type(e).__name__}: {e}); "
             f"train afresh without --resume, or use another --out-dir")
    if state["args"]["epochs"] != args.epochs:
        stretch_lr_decay(lr_scheduler, args, state["args"]["epochs"])
    state["history"].setdefault("seconds", [])      # checkpoints written before it was recorded
    return state["epoch"], state["history"]


def stretch_lr_decay(lr_scheduler, args, saved_epochs):
    """A resume with another --epochs: decay over the new length, so epoch e+1 runs at lr × lr_decay_to^(e/epochs)
    (--lr-decay-to's promise) and the last epoch ends at lr × lr_decay_to. The restored scheduler would keep
    the old per-epoch factor and overshoot (or stop short of) lr × lr_decay_to."""
    lr_scheduler.gamma = args.lr_decay_to ** (1 / args.epochs)
    for group, base_lr in zip(lr_scheduler.optimizer.param_groups, lr_scheduler.base_lrs):
        group["lr"] = base_lr * lr_scheduler.gamma ** lr_scheduler.last_epoch
    # what get_last_lr() reports until the next step(); the scheduler has no public setter for it
    lr_scheduler._last_lr = [group["lr"] for group in lr_scheduler.optimizer.param_groups]
    print(f"--epochs {saved_epochs} -> {args.epochs}: the learning rate now decays to lr × {args.lr_decay_to:g} "
          f"over {args.epochs} epochs (now {lr_scheduler._last_lr[0]:.3g})")


def checked_state(path, device, must_match=(), counter="epoch"):
    """The training checkpoint at `path`, stopped with one line unless its settings equal `must_match`'s
    (name, value) pairs: a resume of another architecture is refused before anything is trained.
    `counter` is the checkpoint's progress key: "epoch" here, "step" for 07's step-counted run."""
    state = load_checkpoint(path, device)
    if "model" not in state or counter not in state:
        fail(f"{path} is not a training checkpoint of this script")
    for name, value in must_match:
        saved = state["args"].get(name)
        if saved is None and value is not None:
            fail(f"{path} was written by another script (it has no '{name}' setting); use another --out-dir")
        if saved != value:
            fail(f"{path} was trained with --{name.replace('_', '-')} {saved}, not {value}; "
                 f"pass the same value or use another --out-dir")
    return state


def start_training(model, args, device, path, must_match=("hidden", "T"), resume=None):
    """A Training for `model`, checkpointed at `path`: fresh, or (resume, default args.resume) restored
    from `path`, whose settings named in `must_match` must equal this run's."""
    training = Training(model, *make_optimizer(model, args, device), args=args, path=Path(path))
    resume = args.resume if resume is None else resume
    if resume:
        names = [*must_match, *(name for name in TRAINING_MATCH if hasattr(args, name))]
        training.start, training.history = load_state(
            path, model, training.optimizer, training.lr_scheduler, training.scaler, device, args,
            must_match=[(name, getattr(args, name)) for name in names])
    return training


def make_optimizer(model, args, device):
    """Adam(lr) with exponential decay to lr × lr_decay_to over the run, and the AMP scaler. Handout D §2.3
    leaves the optimiser to us ("experiment with different hyper parameters and optimizers"); the decay is ours.

    The decay steps once per epoch, so the first epoch always runs at the full lr. (Stepping it every
    batch instead cut 02 --quick's 1-epoch judge accuracy at γ = 5 from 82% to 39%: the conditioning is
    learned late, and a decaying lr starves it.)
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    gamma = args.lr_decay_to ** (1 / args.epochs)
    lr_scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    return optimizer, lr_scheduler, make_grad_scaler(device)
