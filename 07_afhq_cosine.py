"""Handout E §7: a DDPM on AFHQ cats at 32×32 with the cosine schedule, the L1 loss, and FID during training.

    python 07_afhq_cosine.py --train-steps 1000 --save-and-sample-every 100          # 7.1
    python 07_afhq_cosine.py --train-steps 1000 --save-and-sample-every 100 --fid    # 7.2
    python 07_afhq_cosine.py                   # 7.3–7.5: 10,000 steps, a GPU job
    python 07_afhq_cosine.py --quick           # a laptop CPU: 1,000 steps
    python 07_afhq_cosine.py --dry-run         # seconds: synthetic images, a tiny model (what the tests run)

The defaults are tables 2–4: data_path -> --data-dir (data/afhq holding train/cat/*.jpg), data_class, image_size 32,
batch_size 32, time_steps -> --T 50, unet_dim -> --hidden 16, unet_dim_mults -> --dim-mults 1 2 4 8, learning_rate
-> --lr 1e-3, train_steps, save_and_sample_every, fid, save_folder -> --out-dir, load_path -> --resume (the images
sit in memory, so there are no dataloader_workers). Schedule: cosine, Eq. 14. Training: Algorithm 1 with the L1
loss, batches drawn with replacement. Sampling: Algorithm 2 (x̂0 clamped, Eq. 18's posterior mean and variance);
--sampler ddim swaps in DDIM (x̂0 clamped too) for the grids, FID and samples.npz, not for the backward figure.
Handout E's Diffusion class here: q_sample is common/schedules.py q_sample (Eq. 13); p_loss is the L1 line of the
training loop in main(), and forward its loop body (t, ε, q_sample, p_loss); extract is Schedule.at (the batch shares
one t, so a coefficient is one float); p_sample is one iteration of common/samplers.py ddpm_sample (sigma="posterior",
clip_x0=True), p_sample_loop is ddpm_sample, and sample is draw_samples.
Every --save-and-sample-every steps: a grid from fixed noise; with --fid the FID of --n-samples samples against the
training images, resized as clean-fid does (the Inception weights: common/inception.py); losses; the checkpoint.
Runtime per device: the handout map in README.md.
Writes to results/07_afhq_cosine/ (…_quick/, …_dry_run/): config.json, losses.csv, loss_curve.png (7.1), fid.csv +
fid.png (7.2, --fid), fid_train_stats.pt, samples_step_000100.png …, samples_final.png (7.3), samples.npz (uint8
N×32×32×3), forward_process.png (7.4), backward_process.png (7.5), checkpoint.pt (--resume continues, bit-exactly
on a CPU), metrics.json.
"""
import io
import math
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from common import cli
from common.data import AFHQ_CLASSES, load_afhq, synthetic_afhq, to_uint8
from common.folders import clean_exit, open_run, run_folder
from common.frechet import MIN_UNBIASED, frechet_distance
from common.inception import InceptionFeatures, find_weights, where_to_put_weights
from common.plotting import save_curves, save_grid, save_labelled_grid, save_line_plot
from common.run import (Progress, autocast, check_finite, count_parameters, fail, grad_scaler, load_checkpoint,
                        pick_device, save_checkpoint, save_json, save_npz, seed_everything, to_device, to_go,
                        write_bytes, write_csv)
from common.samplers import ddpm_sample, draw_samples, fixed_noise, sampler_label
from common.schedules import cosine_schedule, q_sample
from common.unets import MultiResUNet

QUICK = dict(train_steps=1000, save_and_sample_every=250, n_samples=128)   # Handout E 7.1: 1,000 steps
DRY_RUN = dict(hidden=4, T=5, batch_size=8, train_steps=4, save_and_sample_every=2, n_samples=8, n_vis=4,
               sample_batch=16, sample_steps=3)
MATCH = ("hidden", "dim_mults", "T", "image_size", "data_class", "lr", "batch_size", "seed")   # what --resume keeps
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.99)   # Handout E 7.4 and 7.5


def parse_args(argv):
    p = cli.make_parser(__doc__)
    p.add_argument("--data-class", choices=AFHQ_CLASSES, default="cat", help="AFHQ domain")
    p.add_argument("--image-size", type=cli.positive_int, default=32, help="images are resized to S×S")
    p.add_argument("--T", type=cli.positive_int, default=50, help="diffusion steps")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="images per step")
    p.add_argument("--lr", type=cli.positive_float, default=1e-3, help="Adam learning rate (constant)")
    p.add_argument("--hidden", type=cli.positive_int, default=16, help="channels of the first UNet level (unet_dim)")
    p.add_argument("--dim-mults", type=cli.positive_int, nargs="+", default=[1, 2, 4, 8],
                   help="channel multiplier per UNet level; each level after the first halves the resolution")
    p.add_argument("--train-steps", type=cli.positive_int, default=10000, help="optimiser steps")
    p.add_argument("--save-and-sample-every", type=cli.positive_int, default=1000,
                   help="steps between the sample grid, (with --fid) the FID, and the checkpoint")
    p.add_argument("--fid", action="store_true", help="FID (clean-fid's resize) against the training images")
    p.add_argument("--inception-weights", default=None,
                   help="the FID Inception weights (default: $FID_INCEPTION_WEIGHTS, else torch's hub cache)")
    p.add_argument("--n-samples", type=cli.positive_int, default=512,
                   help="samples for FID and samples.npz (an FID of fewer than 2,048 is biased upwards)")
    p.add_argument("--n-vis", type=cli.positive_int, default=8, help="images in the forward and backward figures")
    cli.add_sampler_flags(p)
    cli.add_run_flags(p, data_dir="data/afhq", data_help="folder with train/<class>/*.jpg (the handout's data.zip)")
    return cli.parse(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    if args.image_size % 2 ** (len(args.dim_mults) - 1):
        p.error(f"--image-size {args.image_size} must divide by 2^(levels − 1) = {2 ** (len(args.dim_mults) - 1)}")
    if args.n_vis > args.batch_size:
        p.error(f"--n-vis {args.n_vis} cannot exceed --batch-size {args.batch_size} (it shows the first batch)")
    if args.sampler == "ddim" and args.sample_steps > args.T:
        p.error(f"--sample-steps {args.sample_steps} is more than --T {args.T}")
    if args.fid and args.n_samples < 2:
        p.error("--fid needs --n-samples 2 or more (a covariance)")


def draw(args, model, sched, x_T, seed):
    """Algorithm 2 with x̂0 clamped to [-1, 1] and Eq. 18's posterior mean and variance (or DDIM, x̂0 clamped)."""
    return draw_samples(model, sched, x_T, seed, args, sigma="posterior", clip_x0=True)


def fraction_timesteps(T):
    """The t shown for 'p % of T': the starter code counts steps k = 0..T−1 and shows k = int(p·T); its k is our
    t − 1 (t in 1..T). T = 50: 0, 25, 50, 75, 99 % -> t = 1, 13, 26, 38, 50."""
    return [min(math.floor(p * T + 1e-9), T - 1) + 1 for p in FRACTIONS]


def backward_process(model, sched, x_T, ts, generator):
    """Handout E 7.5: Algorithm 2 from x_T, stopping after each reverse step t in ts to keep its output x_{t−1}.
    Returns {t: x_{t−1}}; x_{t−1} at t = 1 is the sample x_0."""
    xt, t_start, kept = x_T, sched.T, {}
    for t in sorted(set(ts), reverse=True):
        xt = ddpm_sample(model, xt, sched, t_start, t_end=t, sigma="posterior", clip_x0=True, generator=generator)
        kept[t], t_start = xt, t - 1
    return kept


def diffusion_figures(args, model, sched, x_train, out):
    """7.4: the first training batch noised by Eq. 13 at 0–99 % of T, one ε per image for every column.
    7.5: the backward process from the forward figure's last column, shown at the same fractions."""
    first = torch.randint(len(x_train), (args.batch_size,), device=x_train.device,
                          generator=torch.Generator(x_train.device).manual_seed(args.seed))   # as the step loop drew
    x0, ts = x_train[first][:args.n_vis], fraction_timesteps(sched.T)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed + 3)).to(x0.device)
    alpha_bar = sched.alpha_bar.float().to(x0.device)
    forward = [q_sample(x0, torch.full((len(x0),), t, device=x0.device), alpha_bar, eps) for t in ts]
    rows = [f"#{i + 1}" for i in range(len(x0))]
    save_labelled_grid(np.stack([to_uint8(x) for x in forward], axis=1), out / "forward_process.png", rows,
                       [f"{p:.0%}: x_{t}" for p, t in zip(FRACTIONS, ts)],
                       suptitle="forward process q(x_t | x_0) of the first training batch")
    kept = backward_process(model, sched, forward[-1], ts, torch.Generator(x0.device).manual_seed(args.seed + 4))
    save_labelled_grid(np.stack([to_uint8(kept[t]) for t in reversed(ts)], axis=1), out / "backward_process.png",
                       rows, [f"{p:.0%}: x_{t - 1}" for p, t in zip(reversed(FRACTIONS), reversed(ts))],
                       suptitle=f"backward process (Algorithm 2) from x_{ts[-1]} of the forward figure; a column "
                                f"shows x_(t−1), the output of reverse step t")


def train_stats(args, x_train, extractor, out):
    """(μ, Σ) of the training images' Inception features, computed once and kept in <out>/fid_train_stats.pt under
    a key of plain facts, so that --resume with the same images reads them."""
    key = {"data_dir": "synthetic" if args.dry_run else str(Path(args.data_dir).resolve()),
           "data_class": args.data_class, "image_size": args.image_size, "n_images": len(x_train)}
    path = out / "fid_train_stats.pt"
    try:
        saved = torch.load(path, weights_only=True)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["mu"], saved["sigma"]
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):   # not there yet, or damaged: computed again
        pass
    mu, sigma = extractor.stats(x_train).mean_cov()
    buffer = io.BytesIO()
    torch.save({"key": key, "mu": mu, "sigma": sigma}, buffer)
    write_bytes(buffer.getvalue(), path)
    return mu, sigma


def save_losses(losses, out, window=50):
    """losses.csv and loss_curve.png (7.1): the L1 loss against the training step, with its running mean."""
    write_csv([["step", "l1_loss"]] + [[step, f"{loss:.6f}"] for step, loss in enumerate(losses, start=1)],
              out / "losses.csv")
    steps, k = np.arange(1, len(losses) + 1), min(window, len(losses))
    running = np.convolve(losses, np.ones(k) / k, mode="valid")        # the mean of steps i − k + 1 .. i, i >= k
    save_curves({"each step": (steps, losses), f"running mean of {k} steps": (steps[k - 1:], running)},
                out / "loss_curve.png", xlabel="training step", ylabel="L1 loss: mean of |ε − ε̂| over pixels",
                title="Handout E 7.1: training loss")


def save_fid(args, fid_history, n_train, out):
    """fid.csv and fid.png (7.2): the FID at each save step."""
    write_csv([["step", "fid", "n_samples"]] + [[h["step"], f"{h['fid']:.4f}", h["n_samples"]] for h in fid_history],
              out / "fid.csv")
    save_line_plot([h["step"] for h in fid_history], {"FID": [h["fid"] for h in fid_history]}, out / "fid.png",
                   xlabel="training step", ylabel="FID",
                   title=f"FID (clean-fid resize) of {args.n_samples:,} samples vs {n_train:,} training images")


def main(argv=None):
    args = parse_args(argv)
    t_begin = time.time()
    # --- setup, data, the FID weights and the run folder, checked before anything is written ---
    if args.fid and find_weights(args.inception_weights) is None:
        fail(f"--fid needs the FID Inception weights, which are not here: {where_to_put_weights()}")
    device, sampler = pick_device(args.device), sampler_label(args, "Algorithm 2")
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    seed_everything(args.seed)
    if args.dry_run:
        x_train = synthetic_afhq(32, args.image_size, args.seed, device)
    else:
        x_train = load_afhq(args.data_dir, args.data_class, args.image_size, device)
    if args.fid:   # Handout E §7: "We use clean-fid package": its resize, and the training images as reference
        extractor = InceptionFeatures(device, args.inception_weights, resize="clean-fid")   # loads the weights now
    out = run_folder(args, __file__, MATCH)
    # --- model, cosine schedule (Eq. 14), optimiser; --resume restores every random stream last ---
    model = to_device(MultiResUNet(x_train.shape[1], args.hidden, args.dim_mults), device)
    sched = cosine_schedule(args.T)
    alpha_bar = sched.alpha_bar.float().to(device)                   # ᾱ_t on the device
    optimizer, scaler = torch.optim.Adam(model.parameters(), lr=args.lr), grad_scaler(device)
    data_generator = torch.Generator(device).manual_seed(args.seed)   # picks the training batches
    start, losses, fid_history = 0, [], []
    if args.resume:
        ckpt = load_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, scaler=scaler)
        start, losses, fid_history = ckpt["step"], ckpt["losses"], ckpt["fid"]
        if (ckpt["rng"]["cuda"] is None) != (device.type != "cuda"):   # its random streams are one device type's
            fail(f"{out / 'checkpoint.pt'} was trained on {'a CPU' if ckpt['rng']['cuda'] is None else 'CUDA'}: "
                 f"continue it on the same kind of device (--device)")
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        data_generator.set_state(ckpt["rng"]["data"].cpu())
        if device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
    open_run(args, out)                                              # every check passed: the folder is this run's
    if args.fid:   # the training images' statistics, the FID's reference (computed once, kept in the folder)
        mu_train, sigma_train = train_stats(args, x_train, extractor, out)
        if args.n_samples < MIN_UNBIASED:
            print(f"note: an FID of {args.n_samples:,} samples is biased upwards (fewer than {MIN_UNBIASED:,}): "
                  f"compare values only at the same --n-samples")
    print(f"MultiResUNet D={args.hidden} mults={args.dim_mults}: {count_parameters(model):,} parameters, T={args.T}, "
          f"{len(x_train):,} images on {device}, {to_go(start, args.train_steps, 'steps')}", flush=True)
    shape = x_train.shape[1:]
    # --- train: Handout E Algorithm 1 with the L1 loss; a grid, FID and the checkpoint at every save step ---
    model.train()
    progress = Progress(args.train_steps - start, "train")
    for step in range(start + 1, args.train_steps + 1):
        # line 2: x_0 ~ q(x_0), a batch drawn uniformly (with replacement) from the training images
        x0 = x_train[torch.randint(len(x_train), (args.batch_size,), device=device, generator=data_generator)]
        t = torch.randint(1, args.T + 1, (len(x0),), device=device)     # line 3: t ~ U{1, ..., T}
        eps = torch.randn_like(x0)                                       # line 4: ε ~ N(0, I)
        xt = q_sample(x0, t, alpha_bar, eps)                             # line 5: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
        with autocast(device):
            eps_pred = model(xt, t / args.T)                             # ε_θ(x_t, t)
        loss = (eps - eps_pred.float()).abs().mean()                     # line 6: ‖ε − ε_θ(x_t, t)‖₁, per pixel
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()                                    # line 6: an optimiser step on it
        scaler.step(optimizer)
        scaler.update()
        progress.step(len(x0), loss=loss)
        if step % args.save_and_sample_every == 0 or step == args.train_steps:
            grid = draw(args, model, sched, fixed_noise(args.batch_size, args.seed, device, shape), args.seed + 2)
            save_grid(to_uint8(grid), out / f"samples_step_{step:06d}.png", ncols=8,
                      suptitle=f"samples after {step:,} steps ({sampler}, fixed noise)")
            if args.fid:
                samples = draw(args, model, sched, fixed_noise(args.n_samples, args.seed + 1, device, shape),
                               args.seed + 2)
                fid = frechet_distance(mu_train, sigma_train, *extractor.stats(samples).mean_cov())
                fid_history.append({"step": step, "fid": fid, "n_samples": len(samples)})
                print(f"step {step}: FID {fid:.2f} ({len(samples)} samples)", flush=True)
                save_fid(args, fid_history, len(x_train), out)
            save_losses(losses + progress.losses(), out)
            rng = {"torch": torch.get_rng_state(), "data": data_generator.get_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            save_checkpoint(out / "checkpoint.pt", args, bound="train_steps", step=step, rng=rng, fid=fid_history,
                            losses=losses + progress.losses(), model=model, optimizer=optimizer, scaler=scaler)
            model.train()
    losses += progress.losses()
    # --- the last sample batch (7.3), samples.npz, the forward and backward process (7.4, 7.5), metrics ---
    samples = draw(args, model, sched, fixed_noise(args.n_samples, args.seed + 1, device, shape), args.seed + 2)
    check_finite(samples, "the samples", "train again with a lower --lr")
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:args.batch_size]), out / "samples_final.png", ncols=8,
              suptitle=f"samples after {args.train_steps:,} steps ({sampler})")
    diffusion_figures(args, model, sched, x_train, out)
    metrics = {"data": "synthetic (--dry-run)" if args.dry_run else f"{args.data_dir} ({args.data_class})",
               "n_train_images": len(x_train), "steps": args.train_steps, "sampler": sampler,
               "final_l1_loss_last_100_steps": float(np.mean(losses[-100:])), "fid": fid_history or None,
               "n_samples": len(samples), "seconds_this_run": round(time.time() - t_begin, 1)}
    save_json(metrics, out / "metrics.json")
    print(f"L1 loss (last 100 steps) {metrics['final_l1_loss_last_100_steps']:.4f}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
