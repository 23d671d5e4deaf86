"""Handout A Problem 3 (worked in Handout B Problem 1): DCGAN and WGAN with weight clipping on Fashion-MNIST.

    python 04_dcgan_wgan.py                               # both models, 30 epochs (Handout B ran 100)
    python 04_dcgan_wgan.py --models wgan --clip-sweep 0.1 0.01 0.001   # 3(b): one WGAN per clipping value
    python 04_dcgan_wgan.py --g-loss minimax              # the literal minimax generator loss
    python 04_dcgan_wgan.py --small                       # the footnote's one-conv-layer networks
    python 04_dcgan_wgan.py --quick                       # a laptop CPU: width 64, 3 epochs
    python 04_dcgan_wgan.py --dry-run                     # seconds: synthetic data, tiny nets (what the tests run)

(a) DCGAN: the original (BCE) loss with the non-saturating G loss (--g-loss minimax: the literal one), Adam
    2e-4 with betas (0.5, 0.999) (Handout B 1(a)), dropout 0.3 in D, z of dimension 100, batch 64.
(b) WGAN: the same networks; critic loss −E[D(x)] + E[D(G(z))], RMSProp 5e-5 (Arjovsky et al. 2017; the
    handouts give no lr), every critic parameter clipped to [−c, c] after each critic step (c = 0.01), 5 critic
    steps per G step (Handout B 1(b)).
(c) Samples of both from the last epoch, side by side, with FD-judge (common/judge.py) and FID against the
    Fashion-MNIST test images. Handout B keeps the epoch of lowest G loss instead; metrics.json names it
    (lowest_g_loss_epoch), but a low G loss says G fools the current D, easiest while D is weak (Handout B's
    "best" DCGAN epoch is 3 of 100). FID needs the FID Inception weights (--inception-weights), else "n/a".

Runtime per device: the handout map in README.md.
Writes to results/04_dcgan_wgan/ (…_quick/, …_dry_run/):
    config.json, losses.csv (model, epoch, step, d_loss, g_loss), loss_curve_<model>.png,
    samples_<model>_epoch_001.png … (fixed noise), checkpoint_<model>.pt (after every epoch; --resume continues
    each model, bit-exactly on a CPU), samples_dcgan.npz, samples_wgan.npz (uint8 `images`, N×28×28,
    N = --n-samples; 05 reads them), dcgan_vs_wgan.png, clip_sweep.png and clip_sweep_fd.png (with
    --clip-sweep), metrics.json (FD-judge, FID or "n/a", judge diversity, lowest_g_loss_epoch).
"""
import time

import numpy as np
import torch

from common import cli
from common.data import as_saved, load_mnist, synthetic_mnist, to_uint8
from common.gans import build_gan, full_batches, gan_config, gan_step, generate, save_loss_curve, write_losses_csv
from common.inception import fid, find_weights
from common.judge import get_judge
from common.plotting import save_line_plot, save_mosaic, save_panels
from common.run import (Progress, check_finite, count_parameters, load_checkpoint, on_interrupt, open_run,
                        pick_device, save_checkpoint, save_json, save_npz, seed_everything)
from common.samplers import fixed_noise

# --quick: one lr, DCGAN's 2e-4, for both models: 3 epochs give the WGAN few G steps to learn from
QUICK = dict(epochs=3, hidden=64, lr=2e-4, n_grid=60)
DRY_RUN = dict(epochs=2, hidden=8, n_critic=2, n_samples=64, n_grid=20, clip_sweep=[0.1, 0.01])
MATCH = ("hidden", "z_dim", "small", "dropout", "g_loss", "lr", "batch_size", "n_critic", "clip", "seed")
MODELS = ("dcgan", "wgan")
NAMES = {"dcgan": "DCGAN", "wgan": "WGAN (clipping)"}


def parse_args(argv):
    p = cli.make_parser(__doc__)
    cli.add_training_flags(p, epochs=30, batch_size=64, lr=None, hidden=128,
                           hidden_help="channels of G's 7×7 map and D's last conv",
                           lr_help="learning rate of every model (default: each its own, DCGAN 2e-4 (Handout B), "
                                   "WGAN 5e-5 (Arjovsky et al. 2017))")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="which GANs to train")
    p.add_argument("--z-dim", type=cli.positive_int, default=100, help="noise dimension (the handout: 50..200)")
    p.add_argument("--small", action="store_true", help="one conv layer in G and D (the handout's footnote)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout in D, in [0, 1)")
    p.add_argument("--g-loss", choices=["nonsaturating", "minimax"], default="nonsaturating",
                   help="DCGAN's G loss: −log D(G(z)), or the literal log(1 − D(G(z)))")
    p.add_argument("--n-critic", type=cli.positive_int, default=5, help="WGAN critic steps per G step")
    p.add_argument("--clip", type=cli.positive_float, default=0.01, help="WGAN weight clipping c (max_amp)")
    p.add_argument("--clip-sweep", type=cli.positive_float, nargs="+", default=None, metavar="C",
                   help="also train one WGAN per clipping value c and compare them (e.g. 0.1 0.01 0.001)")
    p.add_argument("--n-samples", type=cli.positive_int, default=10000, help="final samples per model (npz, FD, FID)")
    p.add_argument("--n-grid", type=cli.positive_int, default=100, help="samples in each epoch's grid (fixed noise)")
    p.add_argument("--inception-weights", help="FID Inception weights (else $FID_INCEPTION_WEIGHTS or hub cache)")
    cli.add_run_flags(p, data_help="torchvision dataset root (Fashion-MNIST)")
    return cli.parse(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if max([args.clip] + (args.clip_sweep or [])) > 1:
        p.error("--clip and --clip-sweep need a small c (the handout explores 0.001..0.1)")
    if args.hidden % 4:
        p.error(f"--hidden must be a multiple of 4 (G and D use hidden/4 and hidden/2), got {args.hidden}")
    if args.n_samples < 2:
        p.error("--n-samples must be at least 2 (FD-judge needs a covariance)")


def model_configs(args):
    """{name: cfg}: the chosen models, then one WGAN per other clipping value of the sweep."""
    configs = {name: gan_config(name, args) for name in args.models}
    for c in args.clip_sweep or []:
        if not ("wgan" in configs and c == args.clip):   # the main WGAN already is this one
            configs[f"wgan_clip{c:g}"] = dict(gan_config("wgan", args), clip=c)
    return configs


def sweep_names(args):
    """(c, model name) of every WGAN of the sweep, smallest c first."""
    return [(c, "wgan" if "wgan" in args.models and c == args.clip else f"wgan_clip{c:g}")
            for c in sorted(args.clip_sweep or [])]


def lowest_g_loss_epoch(history):
    """Handout B 1(a)'s "best" epoch: the lowest mean G loss (None if no epoch had a G step)."""
    means = {epoch: np.mean(g) for epoch, g in enumerate(history["g"], start=1) if g}
    return min(means, key=means.get) if means else None


def fid_or_na(args, x, device, weights):
    """FID against as many test images (Handout A 4(c)), or "n/a": no weights, or a dry run's synthetic data."""
    return "n/a" if args.dry_run or weights is None else fid(x, "fashion", device, weights, args.data_dir)


def save_figures(args, samples, metrics, out):
    """(c) the final samples side by side (the same z for each), and the clipping sweep."""
    fd = {name: m["fd_judge"] for name, m in metrics["models"].items()}
    save_panels({f"{NAMES[m]}  (FD-judge {fd[m]:.1f})": to_uint8(samples[m][:64]) for m in args.models},
                out / "dcgan_vs_wgan.png", suptitle="Handout A 3(c): final samples (the same z for each model)")
    if args.clip_sweep:
        sweep = sweep_names(args)
        rows = np.concatenate([to_uint8(samples[name][:10]) for _, name in sweep])   # (R·10, 28, 28)
        save_mosaic(rows, out / "clip_sweep.png", row_labels=[f"c={c:g}, FD {fd[name]:.1f}" for c, name in sweep],
                    title="WGAN weight clipping: one row per c (FD-judge vs test set), the same z per column")
        save_line_plot([c for c, _ in sweep], {"FD-judge": [fd[name] for _, name in sweep]}, out / "clip_sweep_fd.png",
                       xlabel="clipping value c", ylabel="FD-judge vs test set (lower is better)",
                       title="WGAN: the effect of the clipping value", logx=True)


def main(argv=None):
    args = parse_args(argv)
    # --- setup and data (read before anything is written) ---
    device = pick_device(args.device)
    seed_everything(args.seed)
    weights = find_weights(args.inception_weights)   # None if absent; a named file that is missing stops here
    if args.dry_run:
        (x_train, y_train), x_test = synthetic_mnist(256, device), synthetic_mnist(128, device, seed=1)[0]
    else:
        (x_train, y_train), (x_test, _) = (load_mnist("fashion", args.data_dir, tr, device) for tr in (True, False))
    configs = model_configs(args)
    n_batches = full_batches(len(x_train), args.batch_size, max(cfg["n_critic"] for cfg in configs.values()))
    out = open_run(args, __file__, MATCH)
    z_fixed = fixed_noise(args.n_grid, args.seed, device, shape=(args.z_dim,))     # the same z for every grid
    z_eval = fixed_noise(args.n_samples, args.seed + 1, device, shape=(args.z_dim,))  # ... for every model
    histories, samples = {}, {}
    for name, cfg in configs.items():
        # --- model and optimisers: (a) DCGAN, (b) WGAN, the sweep's other WGANs ---
        torch.manual_seed(args.seed)                             # the initial weights depend on the seed only
        gan, path = build_gan(cfg, device), out / f"checkpoint_{name}.pt"
        start, history = 0, {"n_critic": cfg["n_critic"], "d": [], "g": [], "seconds": []}
        if args.resume and path.is_file():                       # a model with no checkpoint yet starts afresh
            ckpt = load_checkpoint(path, G=gan.G, D=gan.D, opt_G=gan.opt_G, opt_D=gan.opt_D,
                                   scaler_G=gan.scaler_G, scaler_D=gan.scaler_D)
            start, history = ckpt["epoch"], ckpt["history"]
        print(f"--- {name}: {cfg['loss']} loss, {cfg['optimizer']} lr {cfg['lr']:g}, n_critic {cfg['n_critic']}, "
              f"G {count_parameters(gan.G):,} / D {count_parameters(gan.D):,} parameters, {len(x_train):,} images "
              f"on {device}, epochs {start + 1}..{args.epochs} ---", flush=True)
        # --- train: Handout A 3(a), 3(b) ---
        for epoch in range(start + 1, args.epochs + 1):
            torch.manual_seed(args.seed + epoch)                 # its own random stream: --resume continues it
            gan.G.train()
            gan.D.train()
            t0, progress = time.time(), Progress(n_batches, f"{name} epoch {epoch}")
            order = torch.randperm(len(x_train), device=device)[:n_batches * args.batch_size]
            for step, idx in enumerate(order.split(args.batch_size), start=1):
                # (1) a D step on a real batch x and fakes G(z): DCGAN maximises log D(x) + log(1 − D(G(z))) (3(a)),
                # WGAN's critic D(x) − D(G(z)), then clips its weights (3(b)); (2) every n_critic-th step a G step
                # (Handout B 1(b); DCGAN: n_critic = 1). The objectives, side by side: common/gans.py, gan_step
                d_loss, g_loss = gan_step(gan, x_train[idx], y_train[idx], g_step=step % cfg["n_critic"] == 0)
                progress.step(len(idx), D=d_loss, G=g_loss)
            history["d"].append(progress.losses("D"))
            history["g"].append(progress.losses("G"))
            history["seconds"].append(time.time() - t0)
            print(f"{name} epoch {epoch}/{args.epochs}: D {np.mean(history['d'][-1]):.4f}  "
                  f"G {np.mean(history['g'][-1] or [np.nan]):.4f}  ({history['seconds'][-1]:.0f} s)", flush=True)
            save_mosaic(to_uint8(generate(gan.G, z_fixed)), out / f"samples_{name}_epoch_{epoch:03d}.png",
                        title=f"{name}, epoch {epoch} (fixed noise)")
            save_checkpoint(path, args, epoch=epoch, history=history, G=gan.G, D=gan.D, opt_G=gan.opt_G,
                            opt_D=gan.opt_D, scaler_G=gan.scaler_G, scaler_D=gan.scaler_D)
        histories[name] = history
        save_loss_curve(history, out / f"loss_curve_{name}.png", title=f"{name}: D and G loss ({cfg['loss']} loss)")
        samples[name] = as_saved(generate(gan.G, z_eval))       # measured as the .npz holds them: 8 bits
        check_finite(samples[name], f"{name}'s samples at --lr {cfg['lr']:g}")
    write_losses_csv(histories, out / "losses.csv")
    # --- (c) samples, FD-judge and FID against the test set ---
    for name in args.models:
        save_npz(out / f"samples_{name}.npz", images=to_uint8(samples[name]))
    judge = get_judge("fashion", args.data_dir, device, args.dry_run)
    real = judge.stats(x_test)                                   # the test set's judge statistics, once
    metrics = {"judge": judge.card, "reference": f"{len(x_test):,} {'synthetic' if args.dry_run else 'test'} images",
               "real_test_judge_diversity": judge.diversity(x_test), "models": {}}
    for name, history in histories.items():
        cfg = configs[name]
        metrics["models"][name] = {
            "n": len(samples[name]), "fd_judge": judge.fd(samples[name], real),
            "fid": fid_or_na(args, samples[name], device, weights), "judge_diversity": judge.diversity(samples[name]),
            "clip": cfg["clip"] if cfg["loss"] == "wgan" else None, "epochs_trained": len(history["d"]),
            "lowest_g_loss_epoch": lowest_g_loss_epoch(history), "train_seconds": round(sum(history["seconds"]), 1)}
    metrics["clip_sweep"] = [{"clip": c, "fd_judge": metrics["models"][name]["fd_judge"],
                              "fid": metrics["models"][name]["fid"]} for c, name in sweep_names(args)]
    save_figures(args, samples, metrics, out)
    save_json(metrics, out / "metrics.json")
    print("\n| model | epochs | FD-judge | FID | judge diversity | lowest G loss (Handout B's best) |\n"
          "|---|---:|---:|---:|---:|---|")
    for name, m in metrics["models"].items():
        fid_text = m["fid"] if m["fid"] == "n/a" else f"{m['fid']:.2f}"
        best = m["lowest_g_loss_epoch"]
        print(f"| {name} | {m['epochs_trained']} | {m['fd_judge']:.2f} | {fid_text} | {m['judge_diversity']:.2f} | "
              + (f"epoch {best}: samples_{name}_epoch_{best:03d}.png |" if best else "no G step |"))
    print(f"| real test images | | | | {metrics['real_test_judge_diversity']:.2f} | |\noutputs in {out}")
    return metrics


if __name__ == "__main__":
    with on_interrupt():
        main()
