"""Handout E §7: a DDPM on AFHQ cats at 32×32 with the cosine schedule, the L1 loss, and FID during training.

    python 07_afhq_cosine.py --data-dir data/afhq --train-steps 1000 --save-and-sample-every 100        # 7.1
    python 07_afhq_cosine.py --data-dir data/afhq --train-steps 1000 --save-and-sample-every 100 --fid  # 7.2
    python 07_afhq_cosine.py --data-dir data/afhq                 # 7.3–7.5: 10,000 steps (the defaults)
    python 07_afhq_cosine.py --data-dir data/afhq --quick         # CPU: 1,000 steps, ~7 min of CPU time
    python 07_afhq_cosine.py --dry-run                            # seconds, synthetic images (the tests run it)

Defaults are the handout's tables 2–4: T = 50, batch 32, Adam lr 1e-3, --unet-dim 16, --dim-mults
1 2 4 8, 32×32 images of one AFHQ class (<data-dir>/train/cat/*.jpg). Schedule: cosine, Eq. 14.
The tables' parameter names map to flags: data_path → --data-dir, time_steps → --T, learning_rate → --lr,
unet_dim_mults → --dim-mults, save_folder → --out-dir, load_path → --resume (<out-dir>/checkpoint.pt);
the others keep their names in kebab-case (train_steps → --train-steps, data_class → --data-class, ...).
Training: Algorithm 1 with the L1 loss, for --train-steps steps. Sampling: Algorithm 2 (x̂0 clamped
to [-1, 1], posterior mean and variance of Eq. 18); `--sampler ddim --sample-steps N --eta η` swaps in
DDIM (x̂0 clamped too) for the grids, FID and samples.npz, while the backward figure (7.5) stays Algorithm 2.
Every --save-and-sample-every steps: a sample
grid from fixed noise, the checkpoint, and with --fid the FID of --n-samples samples against all
training images (needs the FID Inception weights, see common/inception_weights.py; the training images'
statistics are computed once, before training: seconds on a GPU, about 8 images/s on a 2-core CPU, and
kept in fid_train_stats.pt for a rerun or --resume).
The FID resizes as clean-fid's default mode does, as the handout's starter code does (PIL's bicubic; 8-bit
input assumed), not as pytorch-fid (bilinear) like 04 and 05, so the two kinds of FID are not comparable.
Runtime: README.md.

Writes to results/07_afhq_cosine/ (or --out-dir):
    config.json, losses.csv, loss_curve.png (7.1), fid.csv + fid.png (7.2, with --fid),
    samples_step_000100.png ... (fixed noise), samples_final.png (7.3, the last sample batch),
    forward_process.png (7.4), backward_process.png (7.5), samples.npz (uint8 `images`, N×32×32×3),
    checkpoint.pt (atomic; --resume continues exactly), metrics.json, afhq_cat_32.pt (decoded images),
    fid_train_stats.pt (with --fid: the training images' Inception statistics).
"""
import argparse
import math
import time

import numpy as np
import torch

from common.afhq import CLASSES, load_afhq, synthetic_afhq
from common.cli import HelpFormatter, add_sampler_flags, check_sampler_args, parse_with_presets, positive_int
from common.data import to_uint8
from common.files import atomic_save, save_json, save_npz, write_csv
from common.frechet import MIN_UNBIASED, frechet_distance
from common.inception import InceptionFeatures, cached_stats
from common.inception_weights import find_weights, where_to_put_weights
from common.plotting import save_grid, save_labelled_grid, save_line_plot
from common.samplers import ddpm_sample_from, fixed_noise, generate, sampler_label
from common.schedules import cosine_schedule, ddpm_forward
from common.train import ddpm_loss, write_loss_outputs
from common.train_state import checked_state
from common.unet_multires import MultiResUNet
from common.utils import (Progress, count_parameters, fail, interruptible, load_grad_scaler, make_grad_scaler,
                          save_config, start_run, to_device)

ANCESTRAL = "Algorithm 2"   # the sampler unless --sampler ddim: figure titles and metrics.json say which
QUICK = dict(train_steps=1000, save_and_sample_every=250, n_samples=128)   # Handout E 7.1: 1,000 steps
DRY_RUN = dict(unet_dim=4, T=10, batch_size=8, train_steps=4, save_and_sample_every=2, n_samples=16,
               n_vis=4, eval_batch=16, sample_steps=5)
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.99)   # Handout E 7.4 and 7.5
CHECK_EVERY = 50                           # steps between host syncs (progress line, NaN check)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default="data/afhq", help="folder with train/<class>/*.jpg")
    p.add_argument("--data-class", choices=CLASSES, default="cat", help="AFHQ domain")
    p.add_argument("--image-size", type=positive_int, default=32, help="images are resized to S×S")
    p.add_argument("--T", type=positive_int, default=50, help="diffusion steps")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant)")
    p.add_argument("--unet-dim", type=positive_int, default=16, help="channels of the first UNet level")
    p.add_argument("--dim-mults", type=positive_int, nargs="+", default=[1, 2, 4, 8],
                   help="channel multiplier per UNet level (each level halves the resolution)")
    p.add_argument("--train-steps", type=positive_int, default=10000, help="optimiser steps")
    p.add_argument("--save-and-sample-every", type=positive_int, default=1000,
                   help="steps between checkpoint, sample grid and (with --fid) FID")
    p.add_argument("--fid", action="store_true",
                   help="FID (clean-fid's resize) vs the training images at every save step")
    p.add_argument("--inception-weights", default=None,
                   help="the FID Inception weights file (default: $FID_INCEPTION_WEIGHTS, else torch's hub cache)")
    p.add_argument("--n-samples", type=positive_int, default=512,
                   help="samples for FID and samples.npz (the FID is strongly biased below 2,048)")
    p.add_argument("--n-vis", type=positive_int, default=8, help="images in the forward/backward figures")
    p.add_argument("--eval-batch", type=positive_int, default=256, help="samples drawn per batch")
    add_sampler_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and every noise draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out-dir", default=None, help="default: results/07_afhq_cosine/ (a --dry-run: its dry-run/)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/checkpoint.pt")
    p.add_argument("--quick", action="store_true", help="CPU preset (its flags are listed at the end of --help)")
    p.add_argument("--dry-run", action="store_true",
                   help="seconds: synthetic images, tiny model, every output file written")
    args = parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_sampler_args)
    if args.image_size % 2 ** (len(args.dim_mults) - 1):
        p.error(f"--image-size {args.image_size} must be divisible by 2^(len(--dim-mults) − 1) = "
                f"{2 ** (len(args.dim_mults) - 1)}")
    if args.n_vis > args.batch_size:
        p.error(f"--n-vis {args.n_vis} cannot exceed --batch-size {args.batch_size} (one training batch)")
    if not args.lr > 0:
        p.error(f"--lr must be positive, got {args.lr}")
    return args


def load_data(args, device, out):
    """The training images as one (N, 3, S, S) tensor in [-1, 1] on the device, and where they came from."""
    if args.dry_run:
        return synthetic_afhq(64, args.image_size, args.seed, device), "synthetic (dry run)"
    x = load_afhq(args.data_dir, args.data_class, args.image_size, device, cache_dir=out)
    return x, f"{args.data_dir} ({args.data_class})"


def fraction_timesteps(T, fractions=FRACTIONS):
    """The timestep shown for 'p% of T': the handout's starter code counts steps k = 0..T−1 and
    shows k = int(p·T); its step k is our t = k + 1 (t in 1..T, common/schedules.py).
    T = 50: 0, 25, 50, 75, 99% -> t = 1, 13, 26, 38, 50 (99% is the last step, x_T)."""
    return [min(math.floor(p * T + 1e-9), T - 1) + 1 for p in fractions]


# --- Algorithm 1: the step loop ---

def data_generator(seed, device):
    """The random stream that picks the training batches; the first batch it gives is 'the first training batch'."""
    return torch.Generator(device=device).manual_seed(seed)


def draw_batch(x_train, batch_size, generator):
    """Algorithm 1, line 2: x0 ~ q(x0), a batch drawn uniformly (with replacement) from the training images."""
    idx = torch.randint(len(x_train), (batch_size,), device=x_train.device, generator=generator)
    return x_train[idx]


def train_steps(model, optimizer, scaler, x_train, sched, data_gen, first, last, args, progress):
    """Algorithm 1 for steps first..last. Returns their losses (CPU tensor); one host sync per CHECK_EVERY steps."""
    model.train()
    losses, reported = [], first - 1
    for step in range(first, last + 1):
        x0 = draw_batch(x_train, args.batch_size, data_gen)          # line 2
        # lines 3–6: t ~ U{1..T}, ε ~ N(0, I), x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε,
        # and a gradient step on ‖ε − ε_θ(x_t, t)‖₁
        loss = ddpm_loss(model, x0, sched, loss="l1")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
        if step % CHECK_EVERY == 0 or step == last:
            recent = torch.stack(losses[-CHECK_EVERY:]).mean().item()   # the only sync
            if not math.isfinite(recent):
                fail(f"loss became {recent} at step {step}; try a lower --lr (the last checkpoint is intact)")
            progress.update(step - progress.first_step + 1, len(x0) * (step - reported),
                            extra=f"L1 loss {recent:.4f}")
            reported = step
    return torch.stack(losses).float().cpu()


# --- Algorithm 2: sampling ---

def draw_samples(model, sched, x_T, args):
    """Algorithm 2 with x̂0 clamped to [-1, 1] and Eq. 18's posterior mean and variance (or DDIM with --sampler
    ddim, x̂0 clamped too), in batches. The per-step noise z comes from its own generator, so the training
    random stream is untouched."""
    generator, b = torch.Generator(device=x_T.device).manual_seed(args.seed + 2), args.eval_batch
    return torch.cat([generate(model, x_T[i:i + b], sched, args.sampler, args.sample_steps, args.eta,
                               generator=generator, clip_x0=True, sigma="posterior") for i in range(0, len(x_T), b)])


def reverse_process(model, xt, t_start, sched, keep, generator=None):
    """Algorithm 2 started from x_{t_start} instead of x_T, with x̂0 clamped and Eq. 18's posterior mean and
    variance (line 7 as printed puts the square roots over the products √(α_t (1 − ᾱ_{t−1})), √(ᾱ_{t−1} (1 − α_t));
    Eq. 18 has √α_t (1 − ᾱ_{t−1}) and √ᾱ_{t−1} (1 − α_t)). Returns {t: x_{t−1}}, the output of reverse step t,
    for every t in `keep`: the run stops at each kept t, records it, and goes on from there."""
    snapshots = {}
    for t in sorted(set(keep), reverse=True):
        xt = ddpm_sample_from(model, xt, t_start, sched, generator, clip_x0=True, sigma="posterior", t_end=t)
        snapshots[t], t_start = xt, t - 1
    return snapshots


# --- figures and metrics ---

def diffusion_figures(model, sched, x_train, args, out):
    """7.4: the first training batch noised (Eq. 13) at 0–99% of T, one ε per image for every column.
    7.5: Algorithm 2 from the last of those images, shown at the same fractions."""
    x0 = draw_batch(x_train, args.batch_size, data_generator(args.seed, x_train.device))[:args.n_vis]
    ts = fraction_timesteps(sched.T)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed + 3)).to(x0.device)
    forward = [ddpm_forward(x0, torch.full((len(x0),), t, device=x0.device), sched.alpha_bar, eps) for t in ts]
    rows = [f"#{i + 1}" for i in range(len(x0))]
    save_labelled_grid(np.stack([to_uint8(x) for x in forward], axis=1), out / "forward_process.png", rows,
                       [f"{p:.0%}: x_{t}" for p, t in zip(FRACTIONS, ts)],
                       suptitle="forward process q(x_t | x_0), first training batch")
    generator = torch.Generator(device=x0.device).manual_seed(args.seed + 4)
    snapshots = reverse_process(model, forward[-1], ts[-1], sched, ts, generator)
    save_labelled_grid(np.stack([to_uint8(snapshots[t]) for t in reversed(ts)], axis=1),
                       out / "backward_process.png", rows,
                       [f"{p:.0%}: x_{t - 1}" for p, t in zip(reversed(FRACTIONS), reversed(ts))],
                       suptitle=f"backward process (Algorithm 2) from x_{ts[-1]} of the forward figure\n"
                                f"column: x_(t−1), the output of reverse step t, for the forward figure's t")


def fid_reference(x_train, args, device, out):
    """The FID Inception network and its feature statistics (μ, Σ) of all training images, computed
    once before training (common/fid.py's compute_fid would recompute them at every save step) and
    kept in <out>/fid_train_stats.pt for a rerun or --resume with the same images and weights."""
    # Handout E §7: "We use clean-fid package to easily compute the FID score": its resize (common/inception.py)
    extractor = InceptionFeatures(device, args.inception_weights, resize="clean-fid")
    if args.n_samples < MIN_UNBIASED:
        print(f"note: FID of {args.n_samples:,} samples (--n-samples) is strongly biased upwards (fewer than "
              f"{MIN_UNBIASED:,}, the feature dimension): compare values only at the same sample count")
    return extractor, cached_stats(extractor, x_train, out / "fid_train_stats.pt")


def fid_of_samples(samples, fid_ref):
    """FID of the samples against the training images: Fréchet distance of the Inception statistics."""
    extractor, (mu_real, sigma_real) = fid_ref
    return frechet_distance(mu_real, sigma_real, *extractor.stats(samples).mean_cov())


def write_fid_outputs(history, n_train, out):
    """fid.csv and fid.png (7.2): FID over training steps, with the sample count on the plot."""
    write_csv([["step", "fid", "n_samples", "n_train_images"]]
              + [[h["step"], f"{h['fid']:.4f}", h["n_samples"], n_train] for h in history], out / "fid.csv")
    save_line_plot([h["step"] for h in history], {"FID": [h["fid"] for h in history]}, out / "fid.png",
                   xlabel="training step", ylabel="FID",
                   title=f"FID (clean-fid resize) of {history[-1]['n_samples']:,} samples "
                         f"vs {n_train:,} training images")


def milestone(model, sched, x_train, args, out, state, device, fid_ref):
    """At a save step: a sample grid from fixed noise, and with --fid (fid_ref given) the FID of
    n_samples samples. Returns the FID samples (or None)."""
    step, shape = state["step"], x_train.shape[1:]
    grid = draw_samples(model, sched, fixed_noise(args.batch_size, args.seed, device, shape), args)
    save_grid(to_uint8(grid), out / f"samples_step_{step:06d}.png", ncols=8,
              suptitle=f"samples after {step:,} steps ({sampler_label(args, ANCESTRAL)}, fixed noise)")
    if fid_ref is None:
        return None
    samples = draw_samples(model, sched, fixed_noise(args.n_samples, args.seed + 1, device, shape), args)
    state["fid"].append({"step": step, "fid": fid_of_samples(samples, fid_ref), "n_samples": len(samples)})
    print(f"step {step}: FID {state['fid'][-1]['fid']:.2f} ({len(samples)} samples)", flush=True)
    write_fid_outputs(state["fid"], len(x_train), out)
    return samples


def write_losses(losses, n_train, batch_size, out):
    """losses.csv and loss_curve.png (7.1): the L1 loss of every step, and its mean per 'epoch' of
    ⌈N / B⌉ steps (one pass's worth of images; batches are drawn with replacement)."""
    per_epoch = -(-n_train // batch_size)
    chunks = [losses[i:i + per_epoch] for i in range(0, len(losses), per_epoch)]
    write_loss_outputs(out, {"batch": chunks, "epoch": [float(np.mean(c)) for c in chunks]},
                       ylabel="L1 loss ‖ε − ε̂‖₁ (mean)")


# --- checkpoints: model, optimiser, losses, FID history and every random stream ---

def save_checkpoint(path, model, optimizer, scaler, data_gen, state, args, device):
    rng = {"torch": torch.get_rng_state(), "data": data_gen.get_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "rng": rng, **state, "args": vars(args)}, path)


def resume(path, model, optimizer, scaler, data_gen, args, device):
    """Restore save_checkpoint's state, so the run continues exactly as a straight run would."""
    # the architecture and everything that shaped the steps already taken; only --train-steps may change
    names = ("unet_dim", "dim_mults", "T", "image_size", "data_class", "lr", "batch_size", "seed")
    must_match = [(name, getattr(args, name)) for name in names]
    ckpt = checked_state(path, device, must_match, counter="step")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    load_grad_scaler(scaler, ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    data_gen.set_state(ckpt["rng"]["data"].cpu())
    if ckpt["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
    return {"step": ckpt["step"], "losses": ckpt["losses"], "fid": ckpt["fid"]}


# --- the training run ---

def save_steps(start, args):
    """The steps after `start` at which to sample, checkpoint and (with --fid) compute FID."""
    every = args.save_and_sample_every
    return sorted({s for s in range(every, args.train_steps + 1, every) if s > start} |
                  ({args.train_steps} if args.train_steps > start else set()))


def train(model, optimizer, scaler, data_gen, x_train, sched, args, out, state, device, fid_ref):
    """Algorithm 1 up to each save step, then milestone() and the checkpoint; `state` is updated in place.
    Returns the FID samples of the last save step (or None). Ctrl-C or SIGTERM keeps the last checkpoint."""
    progress, fid_samples = Progress(args.train_steps - state["step"], prefix="train"), None
    progress.first_step = state["step"] + 1   # progress counts this run's steps (a resumed run starts later)
    for end in save_steps(state["step"], args):
        with interruptible(interrupted_note(state["step"], out)):
            losses = train_steps(model, optimizer, scaler, x_train, sched, data_gen, state["step"] + 1, end,
                                 args, progress)
            state["step"], state["losses"] = end, state["losses"] + losses.tolist()
            fid_samples = milestone(model, sched, x_train, args, out, state, device, fid_ref)
            write_losses(state["losses"], len(x_train), args.batch_size, out)   # kept if interrupted later
            save_checkpoint(out / "checkpoint.pt", model, optimizer, scaler, data_gen, state, args, device)
    return fid_samples


def interrupted_note(saved_step, out):
    """What a Ctrl-C leaves: the checkpoint of the last save step, or (before the first) nothing to resume."""
    if saved_step == 0:
        return "stopped before the first save step, so nothing was saved: start the same command again"
    return f"step {saved_step} is saved in {out / 'checkpoint.pt'}; continue with --resume"


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    # --- setup (FID weights are checked before anything is trained) ---
    if args.fid and find_weights(args.inception_weights) is None:   # a named path that is missing: named in its error
        fail(f"--fid needs the FID Inception weights, which are not here: {where_to_put_weights()}")
    device, out = start_run(args, __file__)          # device, seed, results/<script>/, config.json (fresh runs)
    # --- data ---
    x_train, source = load_data(args, device, out)
    fid_ref = fid_reference(x_train, args, device, out) if args.fid else None
    # --- model, cosine schedule (Eq. 14), optimiser ---
    model = to_device(MultiResUNet(x_train.shape[1], args.unet_dim, args.dim_mults), device)
    sched = cosine_schedule(args.T, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler, data_gen = make_grad_scaler(device), data_generator(args.seed, device)
    state = {"step": 0, "losses": [], "fid": []}
    if args.resume:
        state = resume(out / "checkpoint.pt", model, optimizer, scaler, data_gen, args, device)
        save_config(args, out)                       # only now: a rejected --resume keeps the old config.json
    print(f"MultiResUNet dim={args.unet_dim} mults={args.dim_mults}: {count_parameters(model):,} parameters, "
          f"T={args.T}, {len(x_train):,} images from {source} on {device}, "
          f"steps {state['step'] + 1}..{args.train_steps}", flush=True)
    # --- train (Algorithm 1); sample (Algorithm 2), FID and checkpoint at every save step ---
    fid_samples = train(model, optimizer, scaler, data_gen, x_train, sched, args, out, state, device, fid_ref)
    # --- loss curve (7.1), final samples (7.3), forward and backward process (7.4, 7.5), metrics ---
    write_losses(state["losses"], len(x_train), args.batch_size, out)
    shape = x_train.shape[1:]
    samples = fid_samples if fid_samples is not None else \
        draw_samples(model, sched, fixed_noise(args.n_samples, args.seed + 1, device, shape), args)
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:args.batch_size]), out / "samples_final.png", ncols=8,
              suptitle=f"the last sample batch, after {state['step']:,} steps")
    diffusion_figures(model, sched, x_train, args, out)
    metrics = {"data": source, "n_train_images": len(x_train), "steps": state["step"],
               "final_l1_loss_last_100_steps": float(np.mean(state["losses"][-100:])),
               "fid": state["fid"] or None, "n_samples": len(samples), "sampler": sampler_label(args, ANCESTRAL),
               "seconds_this_run": round(time.time() - t_start, 1)}
    save_json(metrics, out / "metrics.json")
    print(f"L1 loss (last 100 steps) {metrics['final_l1_loss_last_100_steps']:.4f}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; --resume continues from the last checkpoint"):
        main()
