"""Handout A Problem 4: a conditional DCGAN (cGAN) and WGAN-GP on Fashion-MNIST, and the FID table.

    python 04_dcgan_wgan.py && python 05_cgan_wgangp_fid.py   # the handout configuration (04 gives two rows)
    python 05_cgan_wgangp_fid.py --label-inject dense         # the label enters D at its dense layer instead
    python 05_cgan_wgangp_fid.py --critic-norm instance       # InstanceNorm instead of LayerNorm in the critic
    python 05_cgan_wgangp_fid.py --models cgan                # only the cGAN; the table leaves WGAN-GP's row blank
    python 05_cgan_wgangp_fid.py --quick                      # a CPU, after 04 --quick: width 64, 3 epochs, lr 1e-3
    python 05_cgan_wgangp_fid.py --dry-run                    # seconds: synthetic data (what the tests run)

(Problem 4's "Problem 4(a)", "4(b)" mean Problem 3's DCGAN and WGAN: 04_dcgan_wgan.py.)
(a) cGAN: DCGAN's loss, networks and optimiser (3(a)); the one-hot label is concatenated to z, and enters D
    as 10 constant input channels (or, --label-inject dense, at D's dense layer).
(b) WGAN-GP: critic loss E[D(x̃)] − E[D(x)] + λ E[(‖∇D(x̂)‖₂ − 1)²], x̂ = εx + (1 − ε)x̃, λ = 10; LayerNorm, no
    batch norm or dropout in the critic; Adam, betas (0.5, 0.9); lr 1e-4 and 5 critic steps (Gulrajani et al.).
(c) (i) cGAN samples of every class, (ii) WGAN-GP samples, and the table: FID and FD-judge (common/judge.py) of
    DCGAN, WGAN (clipping), WGAN-GP and cGAN against the test images; per class, the cGAN's FD-judge and spread
    against the real class's and the DCGAN's (4(c): "diversity within each class"). The DCGAN and WGAN rows are
    04's samples_dcgan.npz and samples_wgan.npz in --gan-dir. FID needs the Inception weights, else "n/a".

Handout A 4's names here: λ is --gp-lambda, x̂ and ε are inside common/gans.py gradient_penalty, x̃ is x_fake; the
D and G updates are cgan_step and wgangp_step below.
Runtime per device: the handout map in README.md.
Writes to results/05_cgan_wgangp_fid/ (…_quick/, …_dry_run/): config.json, losses.csv, loss_curve_<model>.png,
    samples_<model>_epoch_001.png … (fixed noise; cGAN: a row per class), checkpoint_<model>.pt (--resume continues
    each, bit-exactly on a CPU), cgan_classes.png, wgangp_samples.png, samples_cgan.npz (uint8 `images` N×28×28,
    `labels`), samples_wgangp.npz, fid_table.md, cgan_class_diversity.png, metrics.json.
"""
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from common import cli
from common.data import FASHION_CLASSES, as_saved, from_uint8, load_mnist, synthetic_mnist, to_uint8
from common.gans import (LABEL_INJECTIONS, Discriminator, Generator, d_loss_bce, full_batches, g_loss_minimax,
                         g_loss_nonsaturating, generate, gradient_penalty, save_loss_curve, wgan_critic_loss,
                         wgan_generator_loss, write_losses_csv)
from common.folders import clean_exit, open_run, run_folder
from common.inception import InceptionFeatures, fid, find_weights
from common.judge import check_judge, get_judge
from common.plotting import save_labelled_grid, save_line_plot, save_mosaic
from common.run import (Progress, autocast, check_finite, count_parameters, fail, grad_scaler, load_checkpoint,
                        pick_device, save_checkpoint, save_json, save_npz, seed_everything, to_device, to_go,
                        write_bytes)
from common.samplers import fixed_noise

# --quick: 3 epochs, what 8 minutes on two CPU cores hold. Both models at lr 1e-3 (above Handout A 3(a)'s O(1e-4))
# and WGAN-GP at 2 critic steps per G step; docs/results/05_cgan_wgangp_fid.md compares others
QUICK = dict(epochs=3, hidden=64, lr=1e-3, n_critic=2, n_grid=60)
DRY_RUN = dict(epochs=2, hidden=8, n_critic=2, n_samples=100, n_grid=20)
MATCH = ("hidden", "z_dim", "small", "dropout", "g_loss", "lr", "batch_size", "n_critic", "gp_lambda", "critic_norm",
         "label_inject", "seed")
NAMES = {"dcgan": "DCGAN", "wgan": "WGAN (clipping)", "wgangp": "WGAN-GP", "cgan": "cGAN"}
TRAINED = ("wgangp", "cgan")                                     # this script's models; 04 trains the other two


def parse_args(argv):
    p = cli.make_parser(__doc__)
    cli.add_training_flags(p, epochs=30, batch_size=64, lr=None, hidden=128,
                           hidden_help="channels of G's 7×7 map and D's last conv",
                           lr_help="learning rate of every model (default: each its own, cGAN 2e-4 (Handout B), "
                                   "WGAN-GP 1e-4 (Gulrajani et al. 2017))")
    p.add_argument("--models", nargs="+", choices=TRAINED, default=list(TRAINED), help="which GANs to train")
    p.add_argument("--z-dim", type=cli.positive_int, default=100, help="noise dimension (the handout: 50..200)")
    p.add_argument("--small", action="store_true", help="one conv layer in G and D (the handout's footnote)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout in the cGAN's D, in [0, 1) (WGAN-GP: none)")
    p.add_argument("--g-loss", choices=["nonsaturating", "minimax"], default="nonsaturating",
                   help="cGAN's G loss: −log D(G(z, y), y), or the literal log(1 − D(G(z, y), y))")
    p.add_argument("--label-inject", choices=LABEL_INJECTIONS, default="channels",
                   help="cGAN's D: the label as 10 constant input channels, or at the dense layer")
    p.add_argument("--n-critic", type=cli.positive_int, default=5, help="WGAN-GP critic steps per G step")
    p.add_argument("--gp-lambda", type=cli.positive_float, default=10.0, help="λ of the gradient penalty")
    p.add_argument("--critic-norm", choices=["layer", "instance", "none"], default="layer", help="WGAN-GP's critic")
    p.add_argument("--n-samples", type=cli.positive_int, default=10000, help="final samples per model (npz, FD, FID)")
    p.add_argument("--n-grid", type=cli.positive_int, default=100, help="samples in each epoch's grid (fixed noise)")
    p.add_argument("--gan-dir", default=None, help="04's output folder, with samples_dcgan.npz and samples_wgan.npz "
                   "(default: results/04_dcgan_wgan, …_quick with --quick, …_dry_run with --dry-run)")
    p.add_argument("--inception-weights", help="FID Inception weights (else $FID_INCEPTION_WEIGHTS or hub cache)")
    cli.add_run_flags(p, data_help="torchvision dataset root (Fashion-MNIST)")
    return cli.parse(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.hidden % 4:
        p.error(f"--hidden must be a multiple of 4 (G and D use hidden/4 and hidden/2), got {args.hidden}")
    if args.n_samples < 20:
        p.error("--n-samples must be at least 20 (the per-class FD-judge needs 2 samples of each class)")


def build(name, args, device):
    """The cGAN's or WGAN-GP's G and D (channels_last on CUDA), their optimisers, and grad scalers (AMP on CUDA; on
    a CPU they do nothing)."""
    G = to_device(Generator(args.z_dim, args.hidden, args.small, conditional=name == "cgan"), device)
    if name == "cgan":
        # Handout A 4(a): DCGAN's D (batch norm, dropout) with the label as input channels or at the dense layer
        D = to_device(Discriminator(args.hidden, args.small, norm="batch", dropout=args.dropout, conditional=True,
                                    label_inject=args.label_inject), device)
        # Handout B 1(a): Adam, lr 2e-4, betas (0.5, 0.999)
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=args.lr or 2e-4, betas=(0.5, 0.999)) for m in (G, D))
    else:
        # Handout A 4(b): no batch norm (the penalty is per sample) and no dropout in the critic
        D = to_device(Discriminator(args.hidden, args.small, norm=args.critic_norm, dropout=0.0), device)
        # Gulrajani et al. (the handouts give no lr): Adam, lr 1e-4, betas (0.5, 0.9)
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=args.lr or 1e-4, betas=(0.5, 0.9)) for m in (G, D))
    return SimpleNamespace(G=G, D=D, opt_G=opt_G, opt_D=opt_D, scaler_G=grad_scaler(device),
                           scaler_D=grad_scaler(device))


def cgan_step(gan, x, y, args):
    """One cGAN step on a batch of real images x with labels y: D, then G on the same z and y. Returns
    (D loss, G loss)."""
    G, D = gan.G, gan.D
    # (1) Update D: maximise log D(x, y) + log(1 − D(G(z, y), y))          Handout A 4(a)
    z = torch.randn(len(x), args.z_dim, device=x.device)                 # z ~ N(0, I)
    with autocast(x.device):
        x_fake = G(z, y)                                                 # (B, 1, 28, 28): fakes of the batch's labels
        d_real, d_fake = D(x, y).float(), D(x_fake.detach(), y).float()  # (B,) logits
    d_loss = d_loss_bce(d_real, d_fake)                                  # = BCE(D(x, y), 1) + BCE(D(G(z, y), y), 0)
    gan.opt_D.zero_grad(set_to_none=True)
    gan.scaler_D.scale(d_loss).backward()
    gan.scaler_D.step(gan.opt_D)
    gan.scaler_D.update()
    # (2) Update G: maximise log D(G(z, y), y), through the updated D        Handout A 3(a), 4(a)
    with autocast(x.device):
        d_fake = D(x_fake, y).float()                                    # gradients flow into G
    if args.g_loss == "minimax":
        g_loss = g_loss_minimax(d_fake)          # the literal game: minimise log(1 − D(G(z, y), y))
    else:
        g_loss = g_loss_nonsaturating(d_fake)    # in practice: minimise −log D(G(z, y), y), which does not saturate
    gan.opt_G.zero_grad(set_to_none=True)
    gan.scaler_G.scale(g_loss).backward()
    gan.scaler_G.step(gan.opt_G)
    gan.scaler_G.update()
    return d_loss.detach(), g_loss.detach()


def wgangp_step(gan, x, step, args):
    """One critic step on a batch x of real images (the epoch's `step`-th), with the gradient penalty; on every
    n_critic-th batch, a G step on the same z too. Returns (D loss, G loss or None)."""
    G, D = gan.G, gan.D
    g_step = step % args.n_critic == 0                                   # Handout B 1(b): n_critic critic steps
    # (1) Update the critic D: maximise D(x) − D(x̃) − λ E[(‖∇D(x̂)‖₂ − 1)²]   Handout A 4(b)
    z = torch.randn(len(x), args.z_dim, device=x.device)                 # z ~ N(0, I)
    with torch.set_grad_enabled(g_step), autocast(x.device):
        x_fake = G(z)                                                    # x̃ = G(z), (B, 1, 28, 28); graph only for (2)
    with autocast(x.device):
        d_real, d_fake = D(x).float(), D(x_fake.detach()).float()        # (B,) scores
    # −E[D(x)] + E[D(x̃)] + λ E[(‖∇D(x̂)‖₂ − 1)²], x̂ = εx + (1 − ε)x̃ with ε ~ U[0, 1] drawn inside
    d_loss = wgan_critic_loss(d_real, d_fake) + gradient_penalty(D, x, x_fake, args.gp_lambda)
    gan.opt_D.zero_grad(set_to_none=True)
    gan.scaler_D.scale(d_loss).backward()
    gan.scaler_D.step(gan.opt_D)
    gan.scaler_D.update()
    if not g_step:
        return d_loss.detach(), None
    # (2) Every n_critic-th batch, update G: maximise D(G(z))             Handout A 4(b), B 1(b)
    with autocast(x.device):
        d_fake = D(x_fake).float()                                       # the updated critic; gradients flow into G
    g_loss = wgan_generator_loss(d_fake)                                 # −E[D(G(z))]
    gan.opt_G.zero_grad(set_to_none=True)
    gan.scaler_G.scale(g_loss).backward()
    gan.scaler_G.step(gan.opt_G)
    gan.scaler_G.update()
    return d_loss.detach(), g_loss.detach()


def save_sample_grid(G, z, path, title, conditional=False):
    """Samples from the fixed noise z; a cGAN's (Handout A 4(c)(i)): a row per class, the same z in every row."""
    if not conditional:
        return save_mosaic(to_uint8(generate(G, z)), path, title=title)
    per = max(1, len(z) // 10)
    y = torch.arange(10, device=z.device).repeat_interleave(per)                   # 0 0 … 1 1 … 9 9
    x = generate(G, z[:per].repeat(10, 1), y)                                      # the same z in every row
    save_labelled_grid(to_uint8(x).reshape(10, per, 28, 28), path, row_labels=FASHION_CLASSES, suptitle=title)


def read_04_samples(gan_dir, device):
    """{'dcgan': x, 'wgan': x}: 04's samples_<model>.npz as floats in [-1, 1]; None where 04 wrote none yet."""
    found = dict.fromkeys(("dcgan", "wgan"))
    for name in found:
        path = Path(gan_dir) / f"samples_{name}.npz"                 # written atomically: whole or absent
        if not path.is_file():
            continue
        try:
            with np.load(path) as saved:
                images = saved["images"]
        except Exception as e:   # truncated, not an .npz, no images in it: numpy and zipfile raise many types
            fail(f"{path} is damaged or not 04_dcgan_wgan.py's samples file ({type(e).__name__}): run 04 with "
                 f"--resume and its other flags to write it again, or move it away")
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) < 2:
            fail(f"{path} holds {images.dtype} {images.shape}, not 04's uint8 N×28×28 samples; run 04 again")
        found[name] = from_uint8(images, device)
    return found


def judged(args, judge, real, x, inception, absent):
    """FID (or n/a: no weights, or a dry run's synthetic images) and FD-judge against the test images, and the
    spread, of samples x (None: not trained, and `absent` says why)."""
    if x is None:
        return {"n": None, "fid": absent, "fd_judge": None, "judge_diversity": None}
    return {"n": len(x), "fid": "n/a" if inception is None else fid(x, "fashion", inception, args.data_dir),
            "fd_judge": judge.fd(x, real), "judge_diversity": judge.diversity(x)}


def class_diversity(judge, x_cgan, y_cgan, x_test, y_test, x_dcgan):
    """Per class: the cGAN's fidelity and spread vs the real class's, and the DCGAN's samples the judge puts in it."""
    judged_class = None if x_dcgan is None else judge.predict(x_dcgan).to(x_dcgan.device)
    rows = []
    for k, name in enumerate(FASHION_CLASSES):
        fake, real = x_cgan[y_cgan == k], x_test[y_test == k]
        uncond = None if x_dcgan is None else x_dcgan[judged_class == k]
        rows.append({"class": name, "n": len(fake), "judge_accuracy": judge.class_accuracy(fake, k),
                     "fd_judge": judge.fd(fake, real), "diversity": judge.diversity(fake),
                     "real_diversity": judge.diversity(real),
                     "dcgan_share_percent": None if uncond is None else 100 * len(uncond) / len(x_dcgan),
                     "dcgan_diversity": None if uncond is None or len(uncond) < 2 else judge.diversity(uncond)})
    return rows


def number(value, form=".2f"):
    return "–" if value is None else value if isinstance(value, str) else format(value, form)


def fid_table(metrics):
    """fid_table.md: the four models, then the cGAN's diversity within each class."""
    lines = [f"# Handout A 4(c): generated samples vs {metrics['reference']}", "", "FD-judge: Fréchet distance of "
             "judge features (common/judge.py), not FID. Spread: mean pairwise distance of judge features.", "",
             "| model | samples | FID | FD-judge | spread |", "|---|---:|---:|---:|---:|"]
    for m in metrics["models"].values():
        lines.append(f"| {m['name']} | {number(m['n'], 'd')} | {number(m['fid'])} | {number(m['fd_judge'])} "
                     f"| {number(m['judge_diversity'])} |")
    lines.append(f"| real test images | | | | {metrics['real_test_judge_diversity']:.2f} |")
    if "cgan_per_class" not in metrics:                          # --models without cgan
        return "\n".join(lines) + "\n"
    lines += ["", "## cGAN: diversity within each class", "",
              "| class | judge accuracy | FD-judge vs real class | spread cGAN | spread real | cGAN / real "
              "| DCGAN share (%) | spread DCGAN (judged class) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in metrics["cgan_per_class"]:
        lines.append(f"| {r['class']} | {100 * r['judge_accuracy']:.1f}% | {r['fd_judge']:.2f} | {r['diversity']:.2f} "
                     f"| {r['real_diversity']:.2f} | {r['diversity'] / r['real_diversity']:.2f} "
                     f"| {number(r['dcgan_share_percent'], '.1f')} | {number(r['dcgan_diversity'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    # --- setup, data and the run folder, checked before anything is written ---
    device = pick_device(args.device)
    seed_everything(args.seed)
    weights = find_weights(args.inception_weights)   # None if absent; a named file that is missing stops here
    inception = None if args.dry_run or weights is None else InceptionFeatures(device, weights)   # loads them now
    check_judge("fashion", args.dry_run)
    preset = "_quick" if args.quick else "_dry_run" if args.dry_run else ""
    args.gan_dir = args.gan_dir or f"results/04_dcgan_wgan{preset}"  # 04's folder, under the same preset
    if args.dry_run:
        (x_train, y_train), (x_test, y_test) = synthetic_mnist(256, device), synthetic_mnist(128, device, seed=1)
    else:
        (x_train, y_train), (x_test, y_test) = (load_mnist("fashion", args.data_dir, t, device) for t in (True, False))
    samples = read_04_samples(args.gan_dir, device)             # the DCGAN and WGAN rows: 04's samples
    n_batches = full_batches(len(x_train), args.batch_size, args.n_critic)
    out = open_run(args, run_folder(args, __file__, MATCH))
    z_fixed = fixed_noise(args.n_grid, args.seed, device, shape=(args.z_dim,))     # the same z for every grid
    z_eval = fixed_noise(args.n_samples, args.seed + 1, device, shape=(args.z_dim,))  # ... for every model
    y_eval = torch.arange(args.n_samples, device=device) % 10     # the cGAN: every class equally often
    histories, generators = {}, {}
    for name in (m for m in TRAINED if m in args.models):
        # --- model and optimisers: (b) WGAN-GP, (a) cGAN ---
        torch.manual_seed(args.seed)                             # the initial weights depend on the seed only
        gan, path = build(name, args, device), out / f"checkpoint_{name}.pt"
        n_critic = args.n_critic if name == "wgangp" else 1     # Handout B 1(b): the critic's steps per G step
        lr = gan.opt_D.defaults["lr"]                            # --lr, or the model's own (build)
        start, history = 0, {"n_critic": n_critic, "d": [], "g": [], "seconds": []}
        if args.resume and path.is_file():                       # a model with no checkpoint yet starts afresh
            ckpt = load_checkpoint(path, G=gan.G, D=gan.D, opt_G=gan.opt_G, opt_D=gan.opt_D,
                                   scaler_G=gan.scaler_G, scaler_D=gan.scaler_D)
            start, history = ckpt["epoch"], ckpt["history"]
        print(f"--- {name}: {type(gan.opt_D).__name__} lr {lr:g}, n_critic {n_critic}, G "
              f"{count_parameters(gan.G):,} / D {count_parameters(gan.D):,} parameters, "
              f"{to_go(start, args.epochs)}", flush=True)
        # --- train: Handout A 4(a), 4(b) ---
        for epoch in range(start + 1, args.epochs + 1):
            torch.manual_seed(args.seed + epoch)                 # its own random stream: --resume continues it
            gan.G.train()
            gan.D.train()
            t0, progress = time.time(), Progress(n_batches, f"{name} epoch {epoch}")
            order = torch.randperm(len(x_train), device=device)[:n_batches * args.batch_size]
            for step, idx in enumerate(order.split(args.batch_size), start=1):
                if name == "cgan":                               # (a): D, then G, on every batch
                    d_loss, g_loss = cgan_step(gan, x_train[idx], y_train[idx], args)
                else:                                            # (b): the critic, then G on every n_critic-th
                    d_loss, g_loss = wgangp_step(gan, x_train[idx], step, args)
                progress.step(len(idx), D=d_loss, G=g_loss)
            history["d"].append(progress.losses("D"))
            history["g"].append(progress.losses("G"))
            history["seconds"].append(time.time() - t0)
            print(f"{name} epoch {epoch}/{args.epochs}: D {np.mean(history['d'][-1]):.4f}  "
                  f"G {np.mean(history['g'][-1] or [np.nan]):.4f}  ({history['seconds'][-1]:.0f} s)", flush=True)
            save_sample_grid(gan.G, z_fixed, out / f"samples_{name}_epoch_{epoch:03d}.png",
                      f"{name}, epoch {epoch} (fixed noise)", conditional=name == "cgan")
            save_checkpoint(path, args, epoch=epoch, history=history, G=gan.G, D=gan.D, opt_G=gan.opt_G,
                            opt_D=gan.opt_D, scaler_G=gan.scaler_G, scaler_D=gan.scaler_D)
        histories[name], generators[name] = history, gan.G
        save_loss_curve(history, out / f"loss_curve_{name}.png", title=f"{NAMES[name]}: D and G loss")
        samples[name] = x = as_saved(generate(gan.G, z_eval, y_eval if name == "cgan" else None))  # as saved
        check_finite(x, f"{name}'s samples at --lr {lr:g}")
        save_npz(out / f"samples_{name}.npz", images=to_uint8(x),
                 **({"labels": y_eval.cpu().numpy()} if name == "cgan" else {}))
    write_losses_csv(histories, out / "losses.csv")
    # --- (c) the table: FID and FD-judge of the four models, the cGAN's diversity per class ---
    judge = get_judge("fashion", args.data_dir, device, args.dry_run)
    real = judge.stats(x_test)                                   # the test set's judge statistics, once
    metrics = {"judge": judge.card, "reference": f"{len(x_test):,} {'synthetic' if args.dry_run else 'test'} images",
               "gan_dir": args.gan_dir, "real_test_judge_diversity": judge.diversity(x_test), "models": {}}
    for name in NAMES:                                           # the table's rows: 04's two, then this run's
        source = ("trained here" if name in histories else "not trained (--models)" if name in TRAINED
                  else str(Path(args.gan_dir) / f"samples_{name}.npz"))
        absent = source if name in TRAINED else "run 04_dcgan_wgan.py first"
        metrics["models"][name] = dict(name=NAMES[name], source=source,
                                       **judged(args, judge, real, samples.get(name), inception, absent))
    # --- figures, the table, metrics.json ---
    if "wgangp" in histories:
        save_mosaic(to_uint8(samples["wgangp"][:len(z_fixed)]), out / "wgangp_samples.png",
                    title=f"Handout A 4(c)(ii): WGAN-GP (FD-judge {metrics['models']['wgangp']['fd_judge']:.1f})")
    if "cgan" in histories:
        metrics["models"]["cgan"]["judge_accuracy"] = judge.class_accuracy(samples["cgan"], y_eval)
        rows = metrics["cgan_per_class"] = class_diversity(judge, samples["cgan"], y_eval, x_test, y_test,
                                                           samples["dcgan"])
        save_sample_grid(generators["cgan"], z_fixed, out / "cgan_classes.png",
                         "Handout A 4(c)(i): cGAN, one row per class (the same z in every row)", conditional=True)
        spread = {"cGAN (asked-for class)": [r["diversity"] for r in rows],
                  "real test images": [r["real_diversity"] for r in rows],
                  "DCGAN (the judge's class)": [np.nan if r["dcgan_diversity"] is None else r["dcgan_diversity"]
                                                for r in rows]}
        save_line_plot(list(range(10)), spread, out / "cgan_class_diversity.png", title="Diversity within each class",
                       ylabel="within-class spread of judge features", xlabel="class (0 T-shirt/top … 9 Ankle boot)")
    save_json(metrics, out / "metrics.json")
    table = fid_table(metrics)
    write_bytes(table.encode(), out / "fid_table.md")
    print("\n" + table + f"\noutputs in {out}")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
