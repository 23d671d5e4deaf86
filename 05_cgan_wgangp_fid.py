"""Handout A Problem 4: a conditional DCGAN (cGAN) and WGAN-GP on Fashion-MNIST, and the FID table.

    python 05_cgan_wgangp_fid.py                          # the handout configuration (reuses 04's DCGAN, WGAN)
    python 05_cgan_wgangp_fid.py --label-inject dense     # the label enters D at its dense layer instead
    python 05_cgan_wgangp_fid.py --critic-norm instance   # InstanceNorm instead of LayerNorm in the critic
    python 05_cgan_wgangp_fid.py --quick                  # 2-core CPU preset (QUICK below; run 04 --quick first)
    python 05_cgan_wgangp_fid.py --dry-run                # seconds, synthetic data (what the tests run)

Handout A Problem 4 writes "extends Problem 4", "as in Problem 4(a)", "Problem 4(b)" and "DCGAN
(Problem 4(a))" where it means Problem 3 (04_dcgan_wgan.py); this script reads them so.
(a) cGAN: DCGAN's loss, networks and optimiser (3(a)); the one-hot label is concatenated to z,
    and enters D as 10 constant input channels (or at D's dense layer).
(b) WGAN-GP: critic loss E[D(x̃)] − E[D(x)] + λ E[(‖∇D(x̂)‖₂ − 1)²] with x̂ = εx + (1 − ε)x̃ and
    λ = 10; the critic has LayerNorm and no batch norm or dropout; Adam, betas (0.5, 0.9); lr 1e-4
    and 5 critic steps per G step are Gulrajani et al. 2017's (the handout gives neither).
(c) (i) cGAN samples of every class, (ii) WGAN-GP samples, and the table: FID and FD-judge of
    10,000 samples of DCGAN, WGAN-clip, WGAN-GP and cGAN against the 10,000 test images; per
    class, the cGAN's FD-judge and its within-class spread against the real class's, to answer
    "how does the conditional model affect sample diversity within each class?". FID needs the
    FID Inception weights: `python -m common.inception_weights` fetches them once, or pass
    --inception-weights PATH (else n/a).
DCGAN and WGAN come from 04_dcgan_wgan.py's checkpoints in --gan-dir, as they are when this script
reaches them (it trains its own models first, while 04 may still run): an unfinished one, or one
whose width, epochs or lr differ from this run's flags, is used with a printed note, recorded in
metrics.json. Missing ones are trained here with this script's flags (into --out-dir).
Runtime: full configuration: minutes on a GPU. --quick (cGAN and WGAN-GP, 3 epochs, width 64,
after 04 --quick): 11.6 CPU-minutes in one thread, measured as 23 min wall on a 2-core CPU shared
with other jobs (an upper bound); FD-judge then cGAN ≈ 104, WGAN-GP ≈ 211.

Writes to results/05_cgan_wgangp_fid/ (or --out-dir):
    config.json, losses.csv, loss_curve_<model>.png, samples_<model>_epoch_001.png ... (fixed
    noise; cGAN: one row per class), checkpoint_<model>.pt (atomic; --resume continues bit-exactly on
    the CPU, closely on CUDA),
    cgan_classes.png (rows = the ten class names), wgangp_samples.png, samples_cgan.npz (`images`
    uint8 N×28×28, `labels`), samples_wgangp.npz, samples_dcgan.npz, samples_wgan.npz (the table's
    four rows, reused models included), fid_table.md, cgan_class_diversity.png, metrics.json.
"""
from pathlib import Path

import torch

from common.cli import parse_with_presets
from common.data import FASHION_CLASSES, as_saved, to_uint8
from common.files import save_json, write_text
from common.gan_cli import check_gan_args, gan_parser, load_data, positive_float
from common.gan_eval import (FID_NA, MODEL_NAMES, evaluate_samples, generate, metrics_header,
                             save_class_grid, save_loss_curve, save_samples_npz, write_losses_csv)
from common.gan_nets import LABEL_INJECTIONS
from common.gan_runs import (check_batch_size, check_resumable, differing_settings, gan_config, load_gan_state,
                             setting)
from common.gan_train import train_gan
from common.judge import get_judge
from common.plotting import save_line_plot, save_mosaic
from common.samplers import fixed_noise
from common.utils import interruptible, save_config, start_run

# --quick: narrower nets, 3 epochs, lr 2e-4 for every model (as 04 --quick): at the WGAN-GP paper's 1e-4 (the
# handout gives no lr), WGAN-GP is still speckled noise after 2 epochs (375 G steps, 5 critic steps each).
QUICK = dict(epochs=3, width=64, lr=2e-4, n_grid=60)
DRY_RUN = dict(epochs=2, width=8, batch_size=64, n_critic=2, n_eval=100, n_grid=20)
GAN_DIR = "results/04_dcgan_wgan"
MODELS = ("dcgan", "wgan", "wgangp", "cgan")  # the table's rows; dcgan and wgan come from 04 if possible
# this script's own models first: 04 may still be writing its checkpoints while these train
TRAIN_ORDER = ("wgangp", "cgan", "dcgan", "wgan")
# the flags of 04 that change a reused model (--seed only draws another one of the same recipe)
REUSE_SETTINGS = {"dcgan": ("width", "epochs", "lr", "batch_size", "z_dim", "small", "dropout", "g_loss"),
                  "wgan": ("width", "epochs", "lr", "batch_size", "z_dim", "small", "dropout", "clip", "n_critic")}


def parse_args(argv):
    p = gan_parser(__doc__.split("\n")[0])
    p.add_argument("--gan-dir", default=GAN_DIR,
                   help="04_dcgan_wgan.py's output folder (its checkpoints); --dry-run drops this default and "
                        "trains all four models itself, but uses a --gan-dir you pass")
    p.add_argument("--label-inject", choices=LABEL_INJECTIONS, default="channels",
                   help="cGAN discriminator: label as 10 constant input channels, or at the dense layer")
    p.add_argument("--gp-lambda", type=positive_float, default=10.0, help="λ of the gradient penalty")
    p.add_argument("--critic-norm", choices=["layer", "instance", "none"], default="layer",
                   help="normalisation in the WGAN-GP critic (never batch norm)")
    args = parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_gan_args)
    if args.dry_run and args.gan_dir == GAN_DIR:
        args.gan_dir = None  # a dry run never picks up real checkpoints: it trains all four itself
    return args


def reusable_checkpoint(name, args):
    """04's checkpoint of `name` in --gan-dir if it is there now (DCGAN and WGAN only), else None."""
    path = Path(args.gan_dir) / f"checkpoint_{name}.pt" if args.gan_dir else None
    return path if name in ("dcgan", "wgan") and path is not None and path.is_file() else None


def check_reusable(args):
    """Load 04's checkpoints that are already there once, now: a damaged one stops the run before hours of
    training, not after (one that 04 writes later is checked when it is reused)."""
    for name in ("dcgan", "wgan"):
        if reusable_checkpoint(name, args):
            load_gan_state(reusable_checkpoint(name, args), torch.device("cpu"))


def reuse_or_train(name, args, x, y, out, device, z_fixed, trained_here):
    """(gan, history, source): 04's run of `name` from --gan-dir if it is there, else trained here (--resume
    continues its checkpoint in --out-dir; trained_here: the runs this command trains, for the Ctrl-C line)."""
    path = reusable_checkpoint(name, args)
    if path is not None:
        gan, epoch, history = load_gan_state(path, device)
        print(f"--- {name}: reusing {path} ({epoch} epochs, width {gan.cfg['width']}) ---", flush=True)
        for note in reuse_notes(name, gan.cfg, history, args):
            print(f"note: {note}", flush=True)
        return gan, history, str(path)
    cfg = gan_config(name, args)
    print(f"--- {name}: {cfg['loss']} loss, {cfg['optimizer']} lr {cfg['lr']:g}, n_critic {cfg['n_critic']}, "
          f"{len(x):,} images on {device}, {cfg['epochs']} epochs ---", flush=True)
    gan, history = train_gan(name, cfg, x, y, out, device, z_fixed, args.resume, others=trained_here)
    return gan, history, "trained here"


def reuse_notes(name, cfg, history, args):
    """One line each: a reused 04 run that is unfinished, or trained with settings other than this run's flags."""
    notes, done = [], len(history["d"])
    if done < cfg["epochs"]:
        notes.append(f"04's {name} has {done} of {cfg['epochs']} epochs: its row is that model; "
                     f"rerun 05 when 04 is done")
    differ = differing_settings(cfg, gan_config(name, args), REUSE_SETTINGS[name])
    if differ:
        there = ", ".join(f"{setting(key, saved)} (this run: {new})" for key, saved, new in differ)
        notes.append(f"04's {name} was trained with {there}: its row is that model, not one with this run's flags")
    return notes


def draw_samples(args, runs, device):
    """n_eval samples per model from the same noise (each G with its own z_dim); the cGAN's labels cycle 0..9."""
    y_eval = torch.arange(args.n_eval, device=device) % len(FASHION_CLASSES)
    samples = {}
    for name, (gan, _, _) in runs.items():
        z = fixed_noise(args.n_eval, args.seed + 1, device, shape=(gan.cfg["z_dim"],))
        # judge what samples_<model>.npz holds (clamped to [-1, 1], 8 bits), as 02 and 03 do
        samples[name] = as_saved(generate(gan.G, z, y_eval if gan.cfg["conditional"] else None))
    return samples, y_eval


def class_diversity(judge, x_cgan, y_cgan, x_test, y_test, x_dcgan):
    """Per class: the cGAN's fidelity and within-class spread vs the real class, and the DCGAN's
    samples that the judge puts in that class (how an unconditional GAN covers it)."""
    judged = judge.predict(x_dcgan).to(x_dcgan.device)
    rows = []
    for k, name in enumerate(FASHION_CLASSES):
        fake, real, uncond = x_cgan[y_cgan == k], x_test[y_test == k], x_dcgan[judged == k]
        rows.append({"class": name, "n": len(fake), "judge_accuracy": judge.class_accuracy(fake, k),
                     "fd_judge": judge.fd(fake, real), "diversity": judge.diversity(fake),
                     "real_diversity": judge.diversity(real), "dcgan_share": len(uncond) / len(x_dcgan),
                     "dcgan_diversity": judge.diversity(uncond) if len(uncond) >= 2 else None})
    return rows


def evaluate(args, runs, samples, y_eval, judge, device):
    """(c) the table's numbers for the four models, and the cGAN's per-class diversity."""
    x_test, y_test = load_data(args, device, train=False)
    metrics = metrics_header(args, judge, x_test)
    for name, (gan, history, source) in runs.items():
        row = evaluate_samples(judge, samples[name], x_test, args, device)
        notes = reuse_notes(name, gan.cfg, history, args) if source != "trained here" else []
        metrics["models"][name] = dict(row, name=MODEL_NAMES[name], source=source, width=gan.cfg["width"],
                                       epochs_trained=len(history["d"]), epochs_planned=gan.cfg["epochs"],
                                       notes=notes)
    metrics["models"]["cgan"]["judge_accuracy"] = judge.class_accuracy(samples["cgan"], y_eval)
    metrics["cgan_per_class"] = class_diversity(judge, samples["cgan"], y_eval, x_test, y_test, samples["dcgan"])
    return metrics


def fid_table(metrics):
    """fid_table.md: the four models, then the cGAN's diversity within each class."""
    return "\n".join(model_table(metrics) + [""] + class_table(metrics)) + "\n"


def model_table(metrics):
    """The four models' FID, FD-judge and spread, with the FID note and any note on a reused 04 run."""
    lines = [f"# Handout A 4(c): generated samples vs {metrics['reference']}", "",
             "FD-judge: Fréchet distance over judge-classifier features (common/judge.py), not FID; "
             "lower is better. Spread: mean pairwise distance of judge features within a set.", "",
             "| model | epochs | width | FID | FD-judge | spread |", "|---|---:|---:|---:|---:|---:|"]
    for m in metrics["models"].values():
        fid = m["fid"] if m["fid"] == FID_NA else f"{m['fid']:.2f}"
        done, planned = m["epochs_trained"], m["epochs_planned"]
        epochs = done if done == planned else f"{done} of {planned}"
        lines.append(f"| {m['name']} | {epochs} | {m['width']} | {fid} | {m['fd_judge']:.2f} "
                     f"| {m['judge_diversity']:.2f} |")
    lines += [f"| real test images | | | | | {metrics['real_test']['judge_diversity']:.2f} |", "",
              f"FID: {metrics['fid_note']}."]
    return lines + [f"Note ({m['name']}, {m['source']}): {note}." for m in metrics["models"].values()
                    for note in m["notes"]]


def class_table(metrics):
    """The cGAN's fidelity and spread within each class, against the real class and the DCGAN's judged class."""
    lines = ["## cGAN: diversity within each class", "",
             "| class | judge accuracy | FD-judge vs real class | spread cGAN | spread real | cGAN / real "
             "| DCGAN share | spread DCGAN (judged class) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in metrics["cgan_per_class"]:
        dcgan = "–" if r["dcgan_diversity"] is None else f"{r['dcgan_diversity']:.2f}"
        lines.append(f"| {r['class']} | {100 * r['judge_accuracy']:.1f}% | {r['fd_judge']:.2f} | {r['diversity']:.2f} "
                     f"| {r['real_diversity']:.2f} | {r['diversity'] / r['real_diversity']:.2f} "
                     f"| {100 * r['dcgan_share']:.1f}% | {dcgan} |")
    return lines


def save_figures(runs, samples, metrics, z_fixed, out):
    """Loss curves of the runs trained here, (c)(i) the cGAN's classes, (c)(ii) WGAN-GP samples, diversity."""
    for name, (gan, history, source) in runs.items():
        if source == "trained here":
            save_loss_curve(history, out / f"loss_curve_{name}.png", title=f"{MODEL_NAMES[name]}: D and G loss")
    save_class_grid(runs["cgan"][0].G, z_fixed, out / "cgan_classes.png",
                    title="Handout A 4(c)(i): cGAN, one row per class (same z in every row)")
    save_mosaic(to_uint8(samples["wgangp"][:len(z_fixed)]), out / "wgangp_samples.png", ncols=10,
                title=f"Handout A 4(c)(ii): WGAN-GP (FD-judge {metrics['models']['wgangp']['fd_judge']:.1f})")
    rows = metrics["cgan_per_class"]
    nan = float("nan")
    save_line_plot(list(range(len(rows))), {
        "cGAN (asked-for class)": [r["diversity"] for r in rows],
        "real test images": [r["real_diversity"] for r in rows],
        "DCGAN (class given by the judge)": [nan if r["dcgan_diversity"] is None else r["dcgan_diversity"]
                                             for r in rows]}, out / "cgan_class_diversity.png",
        xlabel="class (0 = T-shirt/top … 9 = Ankle boot)", ylabel="within-class spread of judge features",
        title="Diversity within each class")


def main(argv=None):
    args = parse_args(argv)
    # --- setup ---
    device, out = start_run(args, __file__)          # device, seed, results/<script>/, config.json (fresh runs)
    # --- data ---
    x_train, y_train = load_data(args, device)
    z_fixed = fixed_noise(args.n_grid, args.seed, device, shape=(args.z_dim,))  # the same z after every epoch
    # --- models: DCGAN and WGAN from 04 (or trained here), (a) cGAN, (b) WGAN-GP ---
    check_reusable(args)
    check_batch_size(len(x_train), args.batch_size, args.n_critic)   # WGAN and WGAN-GP take n_critic
    trained_here = [n for n in TRAIN_ORDER if reusable_checkpoint(n, args) is None]  # at least wgangp and cgan
    if args.resume:                          # every checkpoint is checked (one must exist) before config.json changes
        check_resumable(out, {n: gan_config(n, args) for n in trained_here})
        save_config(args, out)
    runs = {name: reuse_or_train(name, args, x_train, y_train, out, device, z_fixed, trained_here)
            for name in TRAIN_ORDER}
    runs = {name: runs[name] for name in MODELS}
    write_losses_csv(out / "losses.csv", {n: h for n, (_, h, source) in runs.items() if source == "trained here"})
    # --- (c) 10,000 samples per model (the cGAN: every class equally often, like the test set) ---
    samples, y_eval = draw_samples(args, runs, device)
    for name in MODELS:   # every row's samples, so that `python -m common.fid` can score any of them again
        save_samples_npz(out / f"samples_{name}.npz", samples[name], y_eval if name == "cgan" else None)
    # --- metrics, table and figures ---
    judge = get_judge("fashion", args.data_dir, device, cache_dir="results/judge", dry_run=args.dry_run)
    metrics = evaluate(args, runs, samples, y_eval, judge, device)
    save_figures(runs, samples, metrics, z_fixed, out)
    save_json(metrics, out / "metrics.json")
    table = fid_table(metrics)
    write_text(table, out / "fid_table.md")
    print("\n" + table + f"\noutputs in {out}")
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; --resume continues from the checkpoints saved so far "
                       "(none yet: run the command again without --resume)"):
        main()
