"""Handout A Problem 3 (worked in Handout B Problem 1): DCGAN and WGAN with weight clipping on Fashion-MNIST.

    python 04_dcgan_wgan.py                               # both models, 30 epochs (Handout B ran 100)
    python 04_dcgan_wgan.py --models wgan --clip-sweep 0.1 0.01 0.001   # 3(b): one WGAN per clipping value
    python 04_dcgan_wgan.py --g-loss minimax              # the literal minimax generator loss
    python 04_dcgan_wgan.py --small                       # the footnote's one-conv-layer networks
    python 04_dcgan_wgan.py --quick                       # a laptop CPU: width 64, 3 epochs, lr 1e-3
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

Handout A 3's names here: max_amp is --clip (c); the noise dimension is --z-dim; n_critic (Handout B 1(b)) is
--n-critic; the D and G updates are dcgan_step and wgan_step below.
Runtime per device: the handout map in README.md.
Writes to results/04_dcgan_wgan/ (…_quick/, …_dry_run/):
    config.json, losses.csv (model, epoch, step, d_loss, g_loss), loss_curve_<model>.png,
    samples_<model>_epoch_001.png … (fixed noise), checkpoint_<model>.pt (after every epoch; --resume continues
    each model, bit-exactly on a CPU), samples_dcgan.npz, samples_wgan.npz (uint8 `images`, N×28×28,
    N = --n-samples; 05 reads them), dcgan_vs_wgan.png, clip_sweep.png and clip_sweep_fd.png (with
    --clip-sweep), metrics.json (FD-judge, FID or "n/a", judge diversity, lowest_g_loss_epoch).
"""
import time
from types import SimpleNamespace

import numpy as np
import torch

from common import cli
from common.data import as_saved, load_mnist, synthetic_mnist, to_uint8
from common.gans import (Discriminator, Generator, clip_weights_, d_loss_bce, full_batches, g_loss_minimax,
                         g_loss_nonsaturating, generate, save_loss_curve, wgan_critic_loss, wgan_generator_loss,
                         write_losses_csv)
from common.folders import clean_exit, open_run, run_folder
from common.inception import InceptionFeatures, fid, find_weights
from common.judge import check_judge, get_judge
from common.plotting import save_line_plot, save_mosaic, save_panels
from common.run import (Progress, autocast, check_finite, count_parameters, grad_scaler, load_checkpoint, pick_device,
                        save_checkpoint, save_json, save_npz, seed_everything, to_device, to_go)
from common.samplers import fixed_noise

# --quick: 3 epochs, what 8 minutes on two CPU cores hold. Both models at lr 1e-3 (above Handout A 3(a)'s O(1e-4))
# and the WGAN at 2 critic steps per G step; docs/results/04_dcgan_wgan.md compares other settings
QUICK = dict(epochs=3, hidden=64, lr=1e-3, n_critic=2, n_grid=60)
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


def model_clips(args):
    """{name: c}: the chosen models (the DCGAN's c: None), then one WGAN per other clipping value of the sweep."""
    clips = {name: None if name == "dcgan" else args.clip for name in args.models}
    for c in args.clip_sweep or []:
        if not ("wgan" in clips and c == args.clip):     # the main WGAN already is this one
            clips[f"wgan_clip{c:g}"] = c
    return clips


def sweep_names(args):
    """(c, model name) of every WGAN of the sweep, smallest c first."""
    return [(c, "wgan" if "wgan" in args.models and c == args.clip else f"wgan_clip{c:g}")
            for c in sorted(args.clip_sweep or [])]


def build(name, args, device):
    """The DCGAN's or a WGAN's G and D (channels_last on CUDA), their optimisers, and grad scalers (AMP on CUDA; on
    a CPU they do nothing)."""
    G = to_device(Generator(args.z_dim, args.hidden, args.small), device)
    # Handout A 3(a): batch norm and dropout in D; 3(b): the WGAN's critic is the same network
    D = to_device(Discriminator(args.hidden, args.small, norm="batch", dropout=args.dropout), device)
    if name == "dcgan":
        # Handout B 1(a): Adam, lr 2e-4, betas (0.5, 0.999)
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=args.lr or 2e-4, betas=(0.5, 0.999)) for m in (G, D))
    else:
        # Handout A 3(b): RMSProp; lr 5e-5 is Arjovsky et al.'s (the handouts give none)
        opt_G, opt_D = (torch.optim.RMSprop(m.parameters(), lr=args.lr or 5e-5) for m in (G, D))
    return SimpleNamespace(G=G, D=D, opt_G=opt_G, opt_D=opt_D, scaler_G=grad_scaler(device),
                           scaler_D=grad_scaler(device))


def dcgan_step(gan, x, args):
    """One DCGAN step on a batch x of real images: D, then G on the same z. Returns (D loss, G loss)."""
    G, D = gan.G, gan.D
    # (1) Update D: maximise log D(x) + log(1 − D(G(z)))                  Handout A 3(a)
    z = torch.randn(len(x), args.z_dim, device=x.device)                 # z ~ N(0, I)
    with autocast(x.device):
        x_fake = G(z)                                                    # (B, 1, 28, 28); its graph is kept for (2)
        d_real, d_fake = D(x).float(), D(x_fake.detach()).float()        # (B,) logits
    d_loss = d_loss_bce(d_real, d_fake)                                  # = BCE(D(x), 1) + BCE(D(G(z)), 0)
    gan.opt_D.zero_grad(set_to_none=True)
    gan.scaler_D.scale(d_loss).backward()
    gan.scaler_D.step(gan.opt_D)
    gan.scaler_D.update()
    # (2) Update G: maximise log D(G(z)), through the updated D           Handout A 3(a)
    with autocast(x.device):
        d_fake = D(x_fake).float()                                       # gradients flow into G
    if args.g_loss == "minimax":
        g_loss = g_loss_minimax(d_fake)          # the literal game: minimise log(1 − D(G(z)))
    else:
        g_loss = g_loss_nonsaturating(d_fake)    # in practice: minimise −log D(G(z)), which does not saturate
    gan.opt_G.zero_grad(set_to_none=True)
    gan.scaler_G.scale(g_loss).backward()
    gan.scaler_G.step(gan.opt_G)
    gan.scaler_G.update()
    return d_loss.detach(), g_loss.detach()


def wgan_step(gan, x, step, args, c):
    """One critic step on a batch x of real images (the epoch's `step`-th), then clipping to [−c, c]; on every
    n_critic-th batch, a G step on the same z too. Returns (D loss, G loss or None)."""
    G, D = gan.G, gan.D
    g_step = step % args.n_critic == 0                                   # Handout B 1(b): n_critic critic steps
    # (1) Update the critic D: maximise D(x) − D(G(z))                     Handout A 3(b)
    z = torch.randn(len(x), args.z_dim, device=x.device)                 # z ~ N(0, I)
    with torch.set_grad_enabled(g_step), autocast(x.device):
        x_fake = G(z)                                                    # (B, 1, 28, 28); G's graph only for (2)
    with autocast(x.device):
        d_real, d_fake = D(x).float(), D(x_fake.detach()).float()        # (B,) scores
    d_loss = wgan_critic_loss(d_real, d_fake)                            # −E[D(x)] + E[D(G(z))]
    gan.opt_D.zero_grad(set_to_none=True)
    gan.scaler_D.scale(d_loss).backward()
    gan.scaler_D.step(gan.opt_D)
    gan.scaler_D.update()
    # Handout A 3(b): clip every critic parameter to [−c, c] after every critic step
    clip_weights_(D, c)
    if not g_step:
        return d_loss.detach(), None
    # (2) Every n_critic-th batch, update G: maximise D(G(z))             Handout A 3(b), B 1(b)
    with autocast(x.device):
        d_fake = D(x_fake).float()                                       # the clipped critic; gradients flow into G
    g_loss = wgan_generator_loss(d_fake)                                 # −E[D(G(z))]
    gan.opt_G.zero_grad(set_to_none=True)
    gan.scaler_G.scale(g_loss).backward()
    gan.scaler_G.step(gan.opt_G)
    gan.scaler_G.update()
    return d_loss.detach(), g_loss.detach()


def lowest_g_loss_epoch(history):
    """Handout B 1(a)'s "best" epoch: the lowest mean G loss (None if no epoch had a G step)."""
    means = {epoch: np.mean(g) for epoch, g in enumerate(history["g"], start=1) if g}
    return min(means, key=means.get) if means else None


def fid_or_na(args, x, inception):
    """FID against as many test images (Handout A 4(c)), or "n/a": no weights, or a dry run's synthetic data."""
    return "n/a" if inception is None else fid(x, "fashion", inception, args.data_dir)


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
    # --- setup, data and the run folder, checked before anything is written ---
    device = pick_device(args.device)
    seed_everything(args.seed)
    weights = find_weights(args.inception_weights)   # None if absent; a named file that is missing stops here
    inception = None if args.dry_run or weights is None else InceptionFeatures(device, weights)   # loads them now
    check_judge("fashion", args.dry_run)
    if args.dry_run:
        (x_train, _), x_test = synthetic_mnist(256, device), synthetic_mnist(128, device, seed=1)[0]
    else:
        (x_train, _), (x_test, _) = (load_mnist("fashion", args.data_dir, tr, device) for tr in (True, False))
    clips = model_clips(args)
    n_batches = full_batches(len(x_train), args.batch_size, 1 if list(clips) == ["dcgan"] else args.n_critic)
    out = open_run(args, run_folder(args, __file__, MATCH))
    z_fixed = fixed_noise(args.n_grid, args.seed, device, shape=(args.z_dim,))     # the same z for every grid
    z_eval = fixed_noise(args.n_samples, args.seed + 1, device, shape=(args.z_dim,))  # ... for every model
    histories, samples = {}, {}
    for name, c in clips.items():
        # --- model and optimisers: (a) DCGAN, (b) WGAN, the sweep's other WGANs ---
        torch.manual_seed(args.seed)                             # the initial weights depend on the seed only
        gan, path = build(name, args, device), out / f"checkpoint_{name}.pt"
        n_critic = 1 if name == "dcgan" else args.n_critic      # Handout B 1(b): the WGAN's critic steps per G step
        lr = gan.opt_D.defaults["lr"]                            # --lr, or the model's own (build)
        start, history = 0, {"n_critic": n_critic, "d": [], "g": [], "seconds": []}
        if args.resume and path.is_file():                       # a model with no checkpoint yet starts afresh
            ckpt = load_checkpoint(path, G=gan.G, D=gan.D, opt_G=gan.opt_G, opt_D=gan.opt_D,
                                   scaler_G=gan.scaler_G, scaler_D=gan.scaler_D)
            start, history = ckpt["epoch"], ckpt["history"]
        print(f"--- {name}: {type(gan.opt_D).__name__} lr {lr:g}, n_critic {n_critic}, "
              f"G {count_parameters(gan.G):,} / D {count_parameters(gan.D):,} parameters, {len(x_train):,} images "
              f"on {device}, {to_go(start, args.epochs)} ---", flush=True)
        # --- train: Handout A 3(a), 3(b) ---
        for epoch in range(start + 1, args.epochs + 1):
            torch.manual_seed(args.seed + epoch)                 # its own random stream: --resume continues it
            gan.G.train()
            gan.D.train()
            t0, progress = time.time(), Progress(n_batches, f"{name} epoch {epoch}")
            order = torch.randperm(len(x_train), device=device)[:n_batches * args.batch_size]
            for step, idx in enumerate(order.split(args.batch_size), start=1):
                if name == "dcgan":                              # (a): D, then G, on every batch
                    d_loss, g_loss = dcgan_step(gan, x_train[idx], args)
                else:                                            # (b): the critic, then G on every n_critic-th
                    d_loss, g_loss = wgan_step(gan, x_train[idx], step, args, c)
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
        save_loss_curve(history, out / f"loss_curve_{name}.png",
                        title=f"{name}: D and G loss ({'bce' if name == 'dcgan' else 'wgan'} loss)")
        samples[name] = as_saved(generate(gan.G, z_eval))       # measured as the .npz holds them: 8 bits
        check_finite(samples[name], f"{name}'s samples at --lr {lr:g}")
    write_losses_csv(histories, out / "losses.csv")
    # --- (c) samples, FD-judge and FID against the test set ---
    for name in args.models:
        save_npz(out / f"samples_{name}.npz", images=to_uint8(samples[name]))
    judge = get_judge("fashion", args.data_dir, device, args.dry_run)
    real = judge.stats(x_test)                                   # the test set's judge statistics, once
    metrics = {"judge": judge.card, "reference": f"{len(x_test):,} {'synthetic' if args.dry_run else 'test'} images",
               "real_test_judge_diversity": judge.diversity(x_test), "models": {}}
    for name, history in histories.items():
        metrics["models"][name] = {
            "n": len(samples[name]), "fd_judge": judge.fd(samples[name], real),
            "fid": fid_or_na(args, samples[name], inception), "judge_diversity": judge.diversity(samples[name]),
            "clip": clips[name], "epochs_trained": len(history["d"]),
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
    with clean_exit():
        main()
