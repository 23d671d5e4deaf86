"""Handout D §3 (and Handout A Problem 1): a class-conditioned DDPM on MNIST with classifier-free guidance.

    python 02_cfg_mnist.py --epochs 20      # Handout D §3.3–3.4, A 1(b): p_uncond = 0.1, the γ sweep
    python 02_cfg_mnist.py --p-uncond 0 --guidance 1 --sweep 1 --out-dir results/02_onehot   # A 1(a)
    python 02_cfg_mnist.py --quick          # a laptop CPU: width 24, 2 epochs, T = 100, 10 samples per digit
    python 02_cfg_mnist.py --dry-run        # seconds: synthetic data, a tiny model (what the tests run)

Training is Algorithm 3 (the label dropped with probability --p-uncond); sampling is Algorithm 4,
ε̂ = ε_uncond + γ (ε_cond − ε_uncond), both predictions from one batched forward pass. With --p-uncond 0 the
network never sees the "no label" input (Handout A 1(a), a plain one-hot conditional model): only γ = 1,
the purely conditional prediction, means anything.

Handout D §3's names here:
    ddpm_forward              Algorithm 3's lines 3–10: the loop body under "train" in main() (the label drop
                              with p_uncond, t, ε, the loss); line 8 is q_sample (common/schedules.py)
    ddpm_cfg_sample           common/samplers.py ddpm_cfg_sample (Algorithm 4; γ is `gamma`)
    p_uncond, γ = 5.0         --p-uncond, --guidance
    [0, 1, 5, 7, 10, 15]      --sweep (§3.4)
    eval_batch_size (§3.3)    --n-grid (--sample-batch only splits the computation)
Runtime per device: the handout map in README.md. Writes to results/02_cfg_mnist/ (…_quick/, …_dry_run/):
    config.json, losses.csv, loss_curve.png, checkpoint.pt, samples_epoch_001.png … (γ = 5, labels from the
    test set, the same noise each time), guidance_sweep.png (rows γ, columns digits, the same noise in each
    column), guidance_metrics.png, samples.npz (uint8 `images`, `labels`, `guidance`), metrics.json (per γ:
    accuracy as an independent classifier judges it, FD-judge, diversity), sweep/gamma_<γ>.npz (each γ as
    it finishes: an interrupted sweep continues with --resume at the γ it was drawing; a damaged one is drawn again).
"""
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import cli
from common.data import from_uint8, load_mnist, synthetic_mnist, to_uint8
from common.folders import clean_exit, open_run, run_folder
from common.judge import check_judge, get_judge
from common.plotting import save_grid, save_labelled_grid, save_line_plot, save_loss_curves
from common.run import (Progress, autocast, check_finite, count_parameters, decayed_lr, grad_scaler, load_checkpoint,
                        load_part, pick_device, save_checkpoint, save_json, save_losses_csv, save_npz, save_part,
                        seed_everything, to_device, to_go)
from common.samplers import draw_samples, fixed_noise, sampler_label
from common.schedules import ddpm_schedule, q_sample
from common.unets import ConditionalDenoisingUNet

QUICK = dict(hidden=24, epochs=2, T=100, beta_1=3e-4, beta_T=0.06, per_class=10, n_grid=20)
DRY_RUN = dict(hidden=8, epochs=2, T=10, batch_size=64, per_class=2, n_grid=8, sample_batch=64, sample_steps=5)
MATCH = ("hidden", "T", "beta_1", "beta_T", "lr", "lr_decay_to", "batch_size", "seed", "p_uncond")


def parse_args(argv):
    p = cli.make_parser(__doc__)
    cli.add_training_flags(p, epochs=20, batch_size=128, lr=1e-3, hidden=64)
    cli.add_diffusion_flags(p, T=300)
    p.add_argument("--p-uncond", type=cli.unit_interval, default=0.1,
                   help="Algorithm 3 line 5: the probability of dropping the label (0: Handout A 1(a))")
    p.add_argument("--guidance", type=cli.scale, default=5.0, help="γ of the per-epoch grids (Handout D §3.3)")
    p.add_argument("--sweep", type=cli.scale, nargs="+", default=[0, 1, 5, 7, 10, 15],
                   help="guidance scales γ of the final sweep (§3.4): 0 unconditional, 1 conditional, > 1 guided")
    p.add_argument("--digits", type=int, nargs="+", default=list(range(10)), choices=range(10), metavar="DIGIT",
                   help="digits of the sweep")
    p.add_argument("--per-class", type=cli.positive_int, default=100, help="samples per digit and γ in the sweep")
    p.add_argument("--n-grid", type=cli.positive_int, default=40,
                   help="samples in each epoch's grid (Handout D's eval_batch_size)")
    cli.add_run_flags(p)
    return cli.parse(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    if len(args.digits) * args.per_class < 2:
        p.error("--digits × --per-class must give at least 2 samples per γ (FD-judge needs a covariance)")


def guidance_sweep(args, model, sched, epoch, device, out):
    """Handout D §3.4: every digit at every γ, --per-class each, as uint8 (γ, digit, k, 28, 28). Digit d's
    k-th sample starts from the same x_T and sees the same z's at every γ. Each γ is kept in out/sweep/ under
    a key of what it depends on, so a run interrupted here continues with --resume at the γ it was drawing."""
    y = torch.tensor(args.digits, device=device).repeat_interleave(args.per_class)   # d d d … per digit
    x_T = fixed_noise(len(y), args.seed + 1, device)
    key = {"device": device.type, **{name: getattr(args, name) for name in ("digits", "per_class", "seed",
                                                                              "sample_batch", "sampler", "sample_steps",
                                                                              "eta")}}
    images = []
    for gamma in args.sweep:
        path, part_key = out / "sweep" / f"gamma_{gamma:g}.npz", dict(key, epoch=epoch, guidance=gamma)
        part = load_part(path, part_key)
        if part is None:
            t0 = time.time()
            x = draw_samples(model, sched, x_T, args.seed + 2, args, F.one_hot(y, 10), gamma)   # same z's, every γ
            check_finite(x, f"the samples at γ = {gamma:g}")
            part = save_part(path, part_key, to_uint8(x))
            print(f"guidance sweep: γ = {gamma:g} drawn ({len(y)} samples, {time.time() - t0:.0f} s)", flush=True)
        images.append(part)
    return np.stack(images).reshape(len(args.sweep), len(args.digits), args.per_class, 28, 28)


def evaluate(args, images, x_test, device):
    """Per γ: accuracy as the independent judge reads the samples, FD-judge against the test set, diversity."""
    judge = get_judge("mnist", args.data_dir, device, args.dry_run)
    real = judge.stats(x_test)                                    # the test set's judge statistics, once
    y = torch.tensor(args.digits).repeat_interleave(args.per_class)
    rows = []
    for gamma, per_gamma in zip(args.sweep, images):
        x = from_uint8(per_gamma.reshape(-1, 28, 28), device)     # measured as samples.npz holds them: 8 bits
        rows.append({"guidance": gamma, "n": len(x), "judge_accuracy": judge.class_accuracy(x, y),
                     "fd_judge": judge.fd(x, real), "judge_diversity": judge.diversity(x)})
    return {"judge": judge.card, "sampler": sampler_label(args, "Algorithm 4"), "per_guidance": rows,
            "judge_test_set_diversity": judge.diversity(x_test)}


def save_sweep(args, images, metrics, out):
    R, D, K = images.shape[:3]
    save_npz(out / "samples.npz", images=images.reshape(-1, 28, 28),
             labels=np.tile(np.repeat(args.digits, K), R), guidance=np.repeat(args.sweep, D * K))
    save_labelled_grid(images[:, :, 0], out / "guidance_sweep.png", row_labels=[f"γ={gamma:g}" for gamma in args.sweep],
                       col_labels=args.digits,
                       suptitle=f"{sampler_label(args, 'Algorithm 4')}: digits (columns) × guidance γ (rows)")
    save_line_plot(args.sweep, {"judge accuracy (%)": [100 * r["judge_accuracy"] for r in metrics["per_guidance"]]},
                   out / "guidance_metrics.png", xlabel="guidance scale γ", ylabel="accuracy (%)",
                   title="the asked-for digit drawn, as an independent classifier judges")
    save_json(metrics, out / "metrics.json")
    print("\n|   γ | judge accuracy | FD-judge | diversity |\n|----:|---------------:|---------:|----------:|")
    for r in metrics["per_guidance"]:
        print(f"| {r['guidance']:>3g} | {100 * r['judge_accuracy']:13.1f}% | {r['fd_judge']:8.2f} "
              f"| {r['judge_diversity']:9.2f} |")


def main(argv=None):
    args = parse_args(argv)
    # --- setup, data and the run folder, checked before anything is written ---
    device = pick_device(args.device)
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    seed_everything(args.seed)
    if args.dry_run:
        (x_train, y_train), (x_test, y_test) = synthetic_mnist(256, device), synthetic_mnist(128, device, seed=1)
    else:
        (x_train, y_train), (x_test, y_test) = (load_mnist("mnist", args.data_dir, tr, device) for tr in (True, False))
    check_judge("mnist", args.dry_run)
    out = run_folder(args, __file__, MATCH)
    # --- model, schedule, optimiser ---
    model = to_device(ConditionalDenoisingUNet(hidden=args.hidden), device)
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T)
    alpha_bar = sched.alpha_bar.float().to(device)                   # ᾱ_t for line 8, on the device
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = grad_scaler(device)
    start, history = 0, {"batch": [], "epoch": [], "seconds": []}
    if args.resume:
        ckpt = load_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, scaler=scaler)
        start, history = ckpt["epoch"], ckpt["history"]
    open_run(args, out)                                              # every check passed: the folder is this run's
    print(f"ConditionalDenoisingUNet D={args.hidden}: {count_parameters(model):,} parameters, T={args.T}, "
          f"p_uncond={args.p_uncond}, {len(x_train):,} images on {device}, {to_go(start, args.epochs)}")
    y_grid = y_test[:args.n_grid]                                    # §3.3: labels drawn from the test set
    x_T_grid = fixed_noise(len(y_grid), args.seed, device)           # the same x_T for every epoch's grid
    # --- train: Handout D Algorithm 3 ---
    for epoch in range(start + 1, args.epochs + 1):
        torch.manual_seed(args.seed + epoch)                        # its own random stream: --resume continues it
        for group in optimizer.param_groups:
            group["lr"] = decayed_lr(args.lr, args.lr_decay_to, epoch, args.epochs)
        model.train()
        t0, progress = time.time(), Progress(-(-len(x_train) // args.batch_size), f"epoch {epoch}")
        for idx in torch.randperm(len(x_train), device=device).split(args.batch_size):
            x0, y = x_train[idx], y_train[idx]                           # line 3: images and labels
            c = F.one_hot(y, 10).float()                                 # line 4: the one-hot vector c
            keep = (torch.rand(len(y), device=device) >= args.p_uncond).float()   # line 5: c -> 0 w.p. p_uncond
            t = torch.randint(1, args.T + 1, (len(x0),), device=device)  # line 6: t ~ U{1, ..., T}
            eps = torch.randn_like(x0)                                   # line 7: ε ~ N(0, I)
            xt = q_sample(x0, t, alpha_bar, eps)                         # line 8: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
            with autocast(device):
                eps_pred = model(xt, t / args.T, c, keep)                # line 9: ε̂ = ε_θ(x_t, t, c)
            loss = F.mse_loss(eps_pred.float(), eps)                     # line 10: ‖ε − ε̂‖², per pixel
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()                                # line 10: a gradient step on it
            scaler.step(optimizer)
            scaler.update()
            progress.step(len(x0), loss=loss)
        history["batch"].append(progress.losses())
        history["epoch"].append(float(np.mean(history["batch"][-1])))
        history["seconds"].append(time.time() - t0)
        print(f"epoch {epoch}/{args.epochs}: mean loss {history['epoch'][-1]:.4f} ({history['seconds'][-1]:.0f} s)")
        if epoch in args.sample_epochs:                             # §3.3 deliverable 2, at γ = --guidance
            grid = draw_samples(model, sched, x_T_grid, args.seed + 3, args, F.one_hot(y_grid, 10), args.guidance)
            check_finite(grid, f"the samples at γ = {args.guidance:g}")
            save_grid(to_uint8(grid), out / f"samples_epoch_{epoch:03d}.png", titles=y_grid.tolist(),
                      suptitle=f"epoch {epoch}: {sampler_label(args, 'Algorithm 4')}, γ = {args.guidance:g} "
                               f"(title: the digit asked for)")
        save_losses_csv(history, out / "losses.csv")
        save_loss_curves(history, out / "loss_curve.png", ylabel="loss: mean of (ε − ε̂)² over pixels")
        save_checkpoint(out / "checkpoint.pt", args, epoch=epoch, history=history, model=model,
                        optimizer=optimizer, scaler=scaler)
    # --- the guidance sweep (Handout D §3.4) and its metrics ---
    images = guidance_sweep(args, model, sched, len(history["epoch"]), device, out)
    metrics = evaluate(args, images, x_test, device)
    save_sweep(args, images, metrics, out)
    print(f"outputs in {out}")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
