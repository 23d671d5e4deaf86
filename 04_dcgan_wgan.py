"""Handout A Problem 3 (worked in Handout B Problem 1): DCGAN and WGAN with weight clipping on Fashion-MNIST.

    python 04_dcgan_wgan.py                               # both models, 30 epochs (Handout B ran 100;
                                                          # its best DCGAN epoch was 3)
    python 04_dcgan_wgan.py --models wgan --clip-sweep 0.1 0.01 0.001   # 3(b): one WGAN per clipping value
    python 04_dcgan_wgan.py --g-loss minimax              # the literal minimax generator loss
    python 04_dcgan_wgan.py --small                       # the footnote's one-conv-layer networks
    python 04_dcgan_wgan.py --quick                       # 2-core CPU preset (QUICK below)
    python 04_dcgan_wgan.py --dry-run                     # seconds, synthetic data (what the tests run)

(a) DCGAN: the original (BCE) loss with the non-saturating generator loss, Adam 2e-4 with
    betas (0.5, 0.999) (Handout B 1(a)), dropout 0.3 in D, z of dimension 100, batch 64.
(b) WGAN: the same networks; critic loss −E[D(x)] + E[D(G(z))], RMSProp 5e-5 (Arjovsky et al.
    2017; the handouts give no lr), every critic parameter clipped to [−c, c] after each critic
    step (c = 0.01), 5 critic steps per G step (Handout B 1(b)).
(c) Samples of both, side by side, and their FD-judge and FID against the 10,000 Fashion-MNIST
    test images. These come from the last epoch. Handout B keeps the epoch of lowest G loss, but a low
    G loss says G fools the current D, which is easiest while D is weak (Handout B's "best" DCGAN
    epoch is 3 of 100); metrics.json names that epoch per model (lowest_g_loss_epoch), and the script
    prints the name of its grid, samples_<model>_epoch_<EEE>.png. FID needs the FID Inception weights:
    `python -m common.inception_weights` fetches them once, or pass --inception-weights PATH (without
    them the FID column says n/a).
Runtime: full configuration (30 epochs, width 128): minutes on a GPU, hours on a CPU. --quick
(3 epochs, width 64): 8.7 CPU-minutes in one thread, measured as 20 min wall on a 2-core CPU
shared with other jobs (an upper bound); FD-judge then DCGAN ≈ 131, WGAN ≈ 230.

Writes to results/04_dcgan_wgan/ (or --out-dir):
    config.json, losses.csv (model, epoch, step, d_loss, g_loss), loss_curve_<model>.png,
    samples_<model>_epoch_001.png ... (fixed noise), checkpoint_<model>.pt (atomic, after every
    epoch; --resume continues bit-exactly on the CPU, closely on CUDA: AMP and cuDNN's kernel choice
    are not deterministic), samples_dcgan.npz, samples_wgan.npz (`images` uint8
    N×28×28, N = --n-eval = 10,000), dcgan_vs_wgan.png (final samples side by side),
    clip_sweep.png and clip_sweep_fd.png (with --clip-sweep), metrics.json (FD-judge and FID).
"""
import numpy as np

from common.cli import parse_with_presets
from common.data import as_saved, to_uint8
from common.files import save_json
from common.gan_cli import check_gan_args, gan_parser, load_data, positive_float
from common.gan_eval import (FID_NA, MODEL_NAMES, evaluate_samples, generate, metrics_header,
                             save_loss_curve, save_samples_npz, write_losses_csv)
from common.gan_runs import check_batch_size, check_resumable, gan_config
from common.gan_train import train_gan
from common.judge import get_judge
from common.plotting import save_line_plot, save_mosaic, save_panels
from common.samplers import fixed_noise
from common.utils import count_parameters, interruptible, save_config, start_run

# --quick: narrower nets and 3 epochs; lr 2e-4 for both models (DCGAN's, Handout B 1(a)) because WGAN at the
# WGAN paper's 5e-5 (the handouts give no WGAN lr) is still blobs after 3 epochs (560 G steps).
QUICK = dict(epochs=3, width=64, lr=2e-4, n_grid=60)
DRY_RUN = dict(epochs=2, width=8, batch_size=64, n_critic=2, n_eval=64, n_grid=20, clip_sweep=[0.1, 0.01])
MODELS = ("dcgan", "wgan")


def parse_args(argv):
    p = gan_parser(__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="which GANs to train")
    p.add_argument("--clip-sweep", type=positive_float, nargs="+", default=None, metavar="C",
                   help="also train one WGAN per clipping value c and compare them (e.g. 0.1 0.01 0.001)")
    args = parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_gan_args)
    if args.clip_sweep and max(args.clip_sweep) > 1:
        p.error(f"--clip-sweep values must be small positive numbers (0.001..0.1), got {args.clip_sweep}")
    return args


def planned_runs(args):
    """{run name: settings}: the chosen models, then one WGAN per extra clipping value of the sweep."""
    runs = {name: gan_config(name, args) for name in args.models}
    for c in args.clip_sweep or []:
        if not ("wgan" in runs and c == args.clip):  # the main WGAN already is this run
            runs[f"wgan_clip{c:g}"] = dict(gan_config("wgan", args), clip=c)
    return runs


def sweep_names(args):
    """(clipping value, run name) of every run in the sweep, smallest c first."""
    return [(c, "wgan" if "wgan" in args.models and c == args.clip else f"wgan_clip{c:g}")
            for c in sorted(args.clip_sweep or [])]


def lowest_g_loss_epoch(history):
    """Handout B 1(a)'s "best" epoch: "saved based on the lowest generator loss" (the epoch's mean G loss).
    An epoch of fewer batches than --n-critic has no G step and no G loss; None if no epoch has one."""
    means = {epoch: sum(g) / len(g) for epoch, g in enumerate(history["g"], start=1) if g}
    return min(means, key=means.get) if means else None


def evaluate(args, runs, samples, judge, x_test, device):
    """(c) FD-judge (and FID) of every run's samples vs the test set; diversity of the test set itself."""
    metrics = metrics_header(args, judge, x_test)
    for name, (gan, history) in runs.items():
        row = evaluate_samples(judge, samples[name], x_test, args, device)
        clip, epochs = (gan.cfg["clip"] if gan.cfg["loss"] == "wgan" else None), len(history["d"])
        metrics["models"][name] = dict(row, name=MODEL_NAMES.get(name, name), clip=clip, epochs_trained=epochs,
                                       lowest_g_loss_epoch=lowest_g_loss_epoch(history),
                                       train_seconds=round(sum(history["seconds"]), 1))
    metrics["clip_sweep"] = [dict(clip=c, **{k: metrics["models"][name][k] for k in ("fd_judge", "fid")})
                             for c, name in sweep_names(args)]
    return metrics


def save_figures(args, runs, samples, metrics, z_fixed, out):
    """Loss curves, final samples side by side, the clipping sweep."""
    for name, (gan, history) in runs.items():
        save_loss_curve(history, out / f"loss_curve_{name}.png",
                        title=f"{MODEL_NAMES.get(name, name)}: D and G loss ({gan.cfg['loss']} loss)")
    fd = {name: metrics["models"][name]["fd_judge"] for name in runs}
    save_panels({f"{MODEL_NAMES[m]}  (FD-judge {fd[m]:.1f})": to_uint8(samples[m][:64]) for m in args.models},
                out / "dcgan_vs_wgan.png", suptitle="Handout A 3(c): final samples (same z for both)")
    if not args.clip_sweep:
        return
    sweep = sweep_names(args)
    rows = np.concatenate([to_uint8(generate(runs[name][0].G, z_fixed[:10])) for _, name in sweep])  # (R·10, 28, 28)
    save_mosaic(rows, out / "clip_sweep.png", ncols=10, row_labels=[f"c={c:g}, FD {fd[name]:.1f}" for c, name in sweep],
                title="WGAN weight clipping: one row per c (FD-judge vs test set), same z per column")
    save_line_plot([c for c, _ in sweep], {"FD-judge": [fd[name] for _, name in sweep]}, out / "clip_sweep_fd.png",
                   xlabel="clipping value c", ylabel="FD-judge vs test set (lower is better)",
                   title="WGAN: effect of the weight clipping value", logx=True)


def print_table(metrics):
    print("\n| model | epochs | FD-judge | FID | judge diversity |\n|---|---:|---:|---:|---:|")
    for m in metrics["models"].values():
        label = m["name"] + (f", c = {m['clip']:g}" if m["clip"] is not None else "")
        fid = m["fid"] if m["fid"] == FID_NA else f"{m['fid']:.2f}"
        print(f"| {label} | {m['epochs_trained']} | {m['fd_judge']:.2f} | {fid} | {m['judge_diversity']:.2f} |")
    print(f"| real test images | | | | {metrics['real_test']['judge_diversity']:.2f} |")
    print(f"FID: {metrics['fid_note']}")
    print("Handout B's \"best\" epoch, the one of lowest mean G loss, and its grid:")
    for name, m in metrics["models"].items():
        epoch = m["lowest_g_loss_epoch"]
        print(f"  {m['name']}: " + (f"epoch {epoch}, samples_{name}_epoch_{epoch:03d}.png" if epoch else "no G step"))


def main(argv=None):
    args = parse_args(argv)
    # --- setup ---
    device, out = start_run(args, __file__)          # device, seed, results/<script>/, config.json (fresh runs)
    # --- data ---
    x_train, y_train = load_data(args, device)
    x_test = load_data(args, device, train=False)[0]
    z_fixed = fixed_noise(args.n_grid, args.seed, device, shape=(args.z_dim,))  # the same z after every epoch
    # --- train: (a) DCGAN, (b) WGAN, and the clipping sweep ---
    runs, planned = {}, planned_runs(args)
    check_batch_size(len(x_train), args.batch_size, max(cfg["n_critic"] for cfg in planned.values()))
    if args.resume:                          # every checkpoint is checked (one must exist) before config.json changes
        check_resumable(out, planned)
        save_config(args, out)
    for name, cfg in planned.items():
        print(f"--- {name}: {cfg['loss']} loss, {cfg['optimizer']} lr {cfg['lr']:g}, n_critic {cfg['n_critic']}, "
              f"{len(x_train):,} images on {device}, {cfg['epochs']} epochs ---", flush=True)
        runs[name] = train_gan(name, cfg, x_train, y_train, out, device, z_fixed, args.resume, others=planned)
        print(f"G {count_parameters(runs[name][0].G):,} / D {count_parameters(runs[name][0].D):,} parameters")
    write_losses_csv(out / "losses.csv", {name: history for name, (_, history) in runs.items()})
    # --- (c) samples and metrics ---
    z_eval = fixed_noise(args.n_eval, args.seed + 1, device, shape=(args.z_dim,))  # the same z for every model
    # judge what samples_<model>.npz holds (clamped to [-1, 1], 8 bits), as 02 and 03 do
    samples = {name: as_saved(generate(gan.G, z_eval)) for name, (gan, _) in runs.items()}
    for name in args.models:
        save_samples_npz(out / f"samples_{name}.npz", samples[name])
    judge = get_judge("fashion", args.data_dir, device, cache_dir="results/judge", dry_run=args.dry_run)
    metrics = evaluate(args, runs, samples, judge, x_test, device)
    save_figures(args, runs, samples, metrics, z_fixed, out)
    save_json(metrics, out / "metrics.json")
    print_table(metrics)
    print(f"outputs in {out}")
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; --resume continues from the checkpoints saved so far "
                       "(none yet: run the command again without --resume)"):
        main()
