"""Handout D §2: an unconditional DDPM on MNIST, trained from scratch.

    python 01_ddpm_mnist.py --epochs 20     # the handout's configuration (a GPU job)
    python 01_ddpm_mnist.py --quick         # a laptop CPU: width 32, 2 epochs, T = 100
    python 01_ddpm_mnist.py --dry-run       # seconds: synthetic data, a tiny model (what the tests run)

Training is Algorithm 1 (Adam, batch 128, the learning rate decayed to a tenth over the run); sampling is
Algorithm 2, or DDIM with --sampler ddim.

Handout D §2's names here:
    ddpm_schedule             common/schedules.py ddpm_schedule (β, α, ᾱ; t in 1..T, index 0 the clean image)
    ddpm_forward              Algorithm 1's lines 3–8: the loop body under "train" in main(); line 6, x_t from
                              x_0, is q_sample (common/schedules.py)
    ddpm_sample               common/samplers.py ddpm_sample (Algorithm 2)
    eval_batch_size (§2.3)    --n-grid (--sample-batch only splits the computation)
Runtime per device: the handout map in README.md. Writes to results/01_ddpm_mnist/ (…_quick/, …_dry_run/):
    config.json, losses.csv, loss_curve.png (§2.3 deliverable 1: batch and epoch loss), samples_epoch_001.png …
    (deliverable 2, the same noise each time), checkpoint.pt (--resume continues it), samples.npz (uint8
    N×28×28), samples_final.png, metrics.json (FD-judge against the MNIST test set, the judge's digit counts).
"""
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import cli
from common.data import as_saved, load_mnist, synthetic_mnist, to_uint8
from common.folders import clean_exit, open_run, run_folder
from common.judge import check_judge, get_judge
from common.plotting import save_grid, save_loss_curves
from common.run import (Progress, autocast, check_finite, count_parameters, decayed_lr, grad_scaler, load_checkpoint,
                        pick_device, save_checkpoint, save_json, save_losses_csv, save_npz, seed_everything, to_device,
                        to_go)
from common.samplers import draw_samples, fixed_noise, sampler_label
from common.schedules import ddpm_schedule, q_sample
from common.unets import DenoisingUNet

QUICK = dict(hidden=32, epochs=2, T=100, beta_1=3e-4, beta_T=0.06, n_samples=200)
DRY_RUN = dict(hidden=8, epochs=2, T=10, batch_size=64, n_grid=8, n_samples=16, sample_batch=16, sample_steps=5)
MATCH = ("hidden", "T", "beta_1", "beta_T", "lr", "lr_decay_to", "batch_size", "seed")   # what --resume keeps


def parse_args(argv):
    p = cli.make_parser(__doc__)
    cli.add_training_flags(p, epochs=20, batch_size=128, lr=1e-3, hidden=64)
    cli.add_diffusion_flags(p, T=300)
    p.add_argument("--n-grid", type=cli.positive_int, default=40,
                   help="samples in each epoch's grid (Handout D's eval_batch_size)")
    p.add_argument("--n-samples", type=cli.positive_int, default=1000, help="final samples (samples.npz, FD-judge)")
    cli.add_run_flags(p)
    return cli.parse(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    if args.n_samples < 2:
        p.error("--n-samples must be at least 2 (FD-judge needs a covariance)")


def main(argv=None):
    args = parse_args(argv)
    # --- setup, data and the run folder, checked before anything is written ---
    device, sampler = pick_device(args.device), sampler_label(args, "Algorithm 2")
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    seed_everything(args.seed)
    if args.dry_run:
        x_train, x_test = synthetic_mnist(256, device)[0], synthetic_mnist(128, device, seed=1)[0]
    else:
        x_train, x_test = (load_mnist("mnist", args.data_dir, train, device)[0] for train in (True, False))
    check_judge("mnist", args.dry_run)
    out = run_folder(args, __file__, MATCH)
    # --- model, schedule, optimiser ---
    model = to_device(DenoisingUNet(hidden=args.hidden), device)
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T)
    alpha_bar = sched.alpha_bar.float().to(device)                   # ᾱ_t for line 6, on the device
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = grad_scaler(device)                                     # fp16 on CUDA needs it; else it does nothing
    start, history = 0, {"batch": [], "epoch": [], "seconds": []}
    if args.resume:
        ckpt = load_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, scaler=scaler)
        start, history = ckpt["epoch"], ckpt["history"]
    open_run(args, out)                                              # every check passed: the folder is this run's
    print(f"DenoisingUNet D={args.hidden}: {count_parameters(model):,} parameters, T={args.T}, {len(x_train):,} "
          f"images on {device}, {to_go(start, args.epochs)}", flush=True)
    x_T_grid = fixed_noise(args.n_grid, args.seed, device)          # the same x_T for every epoch's grid
    # --- train: Handout D Algorithm 1 ---
    for epoch in range(start + 1, args.epochs + 1):
        torch.manual_seed(args.seed + epoch)                        # its own random stream: --resume continues it
        for group in optimizer.param_groups:
            group["lr"] = decayed_lr(args.lr, args.lr_decay_to, epoch, args.epochs)
        model.train()
        t0, progress = time.time(), Progress(-(-len(x_train) // args.batch_size), f"epoch {epoch}")
        for idx in torch.randperm(len(x_train), device=device).split(args.batch_size):
            x0 = x_train[idx]                                            # line 3: x_0 from the training set
            t = torch.randint(1, args.T + 1, (len(x0),), device=device)  # line 4: t ~ U{1, ..., T}
            eps = torch.randn_like(x0)                                   # line 5: ε ~ N(0, I)
            xt = q_sample(x0, t, alpha_bar, eps)                         # line 6: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
            with autocast(device):
                eps_pred = model(xt, t / args.T)                         # line 7: ε̂ = ε_θ(x_t, t)
            loss = F.mse_loss(eps_pred.float(), eps)                     # line 8: ‖ε − ε̂‖², per pixel
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()                                # line 8: a gradient step on it
            scaler.step(optimizer)
            scaler.update()
            progress.step(len(x0), loss=loss)
        history["batch"].append(progress.losses())
        history["epoch"].append(float(np.mean(history["batch"][-1])))
        history["seconds"].append(time.time() - t0)
        print(f"epoch {epoch}/{args.epochs}: mean loss {history['epoch'][-1]:.4f} ({history['seconds'][-1]:.0f} s)")
        if epoch in args.sample_epochs:                             # §2.3 deliverable 2: the same x_T and z's
            grid = draw_samples(model, sched, x_T_grid, args.seed + 2, args)     # Algorithm 2, or --sampler ddim
            save_grid(to_uint8(grid), out / f"samples_epoch_{epoch:03d}.png",
                      suptitle=f"DDPM samples after epoch {epoch} ({sampler}, fixed noise)")
        save_losses_csv(history, out / "losses.csv")
        save_loss_curves(history, out / "loss_curve.png", ylabel="loss: mean of (ε − ε̂)² over pixels")
        save_checkpoint(out / "checkpoint.pt", args, epoch=epoch, history=history, model=model,
                        optimizer=optimizer, scaler=scaler)
    # --- final samples and their FD-judge against the test set ---
    x_T = fixed_noise(args.n_samples, args.seed + 1, device)
    samples = draw_samples(model, sched, x_T, args.seed + 3, args)
    check_finite(samples, "the samples", "train again with a lower --lr")
    samples = as_saved(samples)                                     # measured as samples.npz holds them: 8 bits
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:100]), out / "samples_final.png",
              suptitle=f"DDPM samples, final model ({sampler})")
    judge = get_judge("mnist", args.data_dir, device, args.dry_run)
    metrics = {"judge": judge.card, "sampler": sampler, "n_samples": len(samples),
               "fd_judge_vs_mnist_test": judge.fd(samples, x_test),
               "judge_digit_histogram": torch.bincount(judge.predict(samples), minlength=10).tolist(),
               "train_seconds": round(sum(history["seconds"]), 1)}
    save_json(metrics, out / "metrics.json")
    print(f"FD-judge vs MNIST test ({len(samples)} samples): {metrics['fd_judge_vs_mnist_test']:.2f}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
