"""Handout A Problem 2: classifier guidance steers 01's frozen, unconditional MNIST DDPM towards a chosen digit.

    python 03_classifier_guidance.py                # guides results/01_ddpm_mnist/checkpoint.pt
    python 03_classifier_guidance.py --train-unet   # ... running 01_ddpm_mnist.py first if it is missing or unfinished
    python 03_classifier_guidance.py --quick        # a laptop CPU: 10 samples per digit (runs 01 --quick if needed)
    python 03_classifier_guidance.py --dry-run      # seconds: synthetic data, tiny models (what the tests run)
    python 03_classifier_guidance.py --quick --cfg-samples results/02_cfg_mnist_quick/samples.npz   # + 02's sweep

(a) 01's DDPM is frozen (eval, requires_grad_(False)) and checked tensor by tensor against a copy at the end.
(b) The guide p_φ(y | x_t, t) (Dhariwal & Nichol 2021, https://arxiv.org/abs/2105.05233): the UNet's down half.
(c) Algorithm 2 with the mean shifted by s·Σ_t·∇ log p_φ(y | x_t, t), Σ_t = β_t, for every digit at every s
    (the same x_T and z at each s), judged by an independent classifier (common/judge.py, never p_φ).
Handout A 2's names here: p_φ(y | x_t, t) is `p_phi` (a TimeConditionedEncoder, common/unets.py); s is --scales;
Σ_t ∇_{x_t} log p_φ is common/samplers.py classifier_guided_sample (variance_scaled=True) with grad_log_prob.
Runtime per device: the handout map in README.md.
Writes to results/03_classifier_guidance/ (…_quick/, …_dry_run/): config.json, checkpoint_classifier.pt,
losses.csv, loss_curve.png, classifier_accuracy_vs_t.png, samples_s<s>.png, guidance_sweep.png, accuracy_vs_scale.png,
diversity_vs_scale.png, samples.npz (uint8 images, labels, scale), metrics.json, guidance_table.md, sweep/s_<s>.npz.
"""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import cli
from common.data import from_uint8, load_mnist, synthetic_mnist, to_uint8
from common.frechet import fd_from_features, mean_pairwise_distance
from common.folders import clean_exit, open_run, run_folder
from common.judge import check_judge, get_judge
from common.plotting import save_labelled_grid, save_line_plot, save_loss_curves, save_mosaic
from common.run import (Progress, autocast, check_finite, count_parameters, decayed_lr, fail, grad_scaler,
                        load_checkpoint, load_part, pick_device, read_checkpoint, save_checkpoint, save_json,
                        save_losses_csv, save_npz, save_part, seed_everything, to_device, to_go, write_bytes)
from common.samplers import classifier_guided_sample, fixed_noise
from common.schedules import ddpm_schedule, q_sample
from common.unets import DenoisingUNet, TimeConditionedEncoder

QUICK = dict(per_class=10)   # p_φ keeps its defaults: a narrower or shorter-trained p_φ guides worse
DRY_RUN = dict(classifier_hidden=8, classifier_lr=1e-2, classifier_batch_size=32, per_class=3, n_cols=3,
               sample_batch=64)
MATCH = ("classifier_hidden", "classifier_batch_size", "classifier_lr", "seed", "T", "beta_1", "beta_T")
at_least_2 = cli.Typed("integer >= 2", int, lambda v: v >= 2)   # FD-judge and diversity need two samples per digit


class NoisyClassifier(TimeConditionedEncoder):
    """p_φ(y | x_t, t) on 28×28 MNIST: forward(x_t, t/T) gives (B, 10) logits; log_prob makes it a guide."""

    def log_prob(self, xt, t_frac, y):
        """log p_φ(y | x_t, t), shape (B,), for labels y (B,)."""
        return F.log_softmax(self(xt, t_frac).float(), dim=1).gather(1, y.reshape(-1, 1)).squeeze(1)

    def loss(self, xt, t, T, y):
        """Handout A 2(b): the cross-entropy −log p_φ(y | x_t, t), the network seeing t/T (common/unets.py)."""
        with autocast(xt.device):
            logits = self(xt, t / T)
        return F.cross_entropy(logits.float(), y)

    @torch.no_grad()
    def accuracy(self, xt, t_frac, y):
        """The fraction of x_t that p_φ labels y at time t/T."""
        with autocast(xt.device):
            guess = self(xt, torch.full((len(xt),), t_frac, device=xt.device)).argmax(1)
        return (guess == y.to(guess.device)).float().mean().item()


def parse_args(argv):
    p = cli.make_parser(__doc__)
    p.add_argument("--unet-checkpoint", help="01_ddpm_mnist.py's checkpoint.pt (default: "
                   "results/01_ddpm_mnist/checkpoint.pt, …_quick/ with --quick, …_dry_run/ with --dry-run)")
    p.add_argument("--train-unet", action="store_true", help="run 01 if --unet-checkpoint is missing (--quick does)")
    p.add_argument("--classifier-epochs", type=cli.positive_int, default=3, help="p_φ training epochs")
    p.add_argument("--classifier-batch-size", type=cli.positive_int, default=128, help="p_φ images per step")
    p.add_argument("--classifier-lr", type=cli.positive_float, default=1e-3, help="p_φ's Adam learning rate")
    p.add_argument("--classifier-hidden", type=cli.positive_int, default=32, help="p_φ width D")
    p.add_argument("--scales", type=cli.non_negative_scale, nargs="+", default=[0, 1, 5, 10], help="guidance scales")
    p.add_argument("--digits", type=int, nargs="+", default=list(range(10)), choices=range(10), metavar="DIGIT",
                   help="target digits")
    p.add_argument("--per-class", type=at_least_2, default=100, help="samples per digit and s")
    p.add_argument("--n-cols", type=cli.positive_int, default=10, help="samples per digit in samples_s<s>.png")
    p.add_argument("--cfg-samples", help="02_cfg_mnist.py's samples.npz: its γ sweep joins the table (2(d))")
    p.add_argument("--sample-batch", type=cli.positive_int,
                   help="samples computed in one pass (default: 1000 on CUDA, 100 on CPU): speed and memory only")
    cli.add_run_flags(p)
    args = cli.parse(p, argv, QUICK, DRY_RUN)
    if args.cfg_samples and not Path(args.cfg_samples).is_file():
        p.error(f"--cfg-samples {args.cfg_samples} does not exist (02_cfg_mnist.py writes <out-dir>/samples.npz)")
    if args.cfg_samples:   # 02's samples.npz, checked before any work rather than after the sweep
        try:
            with np.load(args.cfg_samples) as z:
                shape, labels, guidance = z["images"].shape, z["labels"], z["guidance"]
            if shape[1:] != (28, 28) or not shape[:1] == labels.shape == guidance.shape or any(
                    np.sum((labels == d) & (guidance == g)) < 2 for g in set(guidance.tolist()) for d in args.digits):
                raise ValueError
        except Exception as e:   # missing, not an .npz, keys or shapes not 02's: numpy raises several types
            p.error(f"--cfg-samples {args.cfg_samples} is not 02_cfg_mnist.py's samples.npz with 2 or more 28×28 "
                    f"images of each --digits digit at each γ ({type(e).__name__})")
    return args


def load_frozen_unet(args, device):
    """Handout A 2(a): 01's ε_θ(x_t, t) in eval mode with requires_grad_(False), its schedule and what it is.
    A missing one is trained first (--train-unet, --quick, --dry-run) by 01_ddpm_mnist.py as its own process, and
    so is the rest of one that such a run left unfinished (01 --resume): a half-trained DDPM is never guided
    unasked."""
    preset = ["--quick"] if args.quick else ["--dry-run"] if args.dry_run else []
    folder = "results/01_ddpm_mnist" + ("_quick" if args.quick else "_dry_run" if args.dry_run else "")
    path = Path(args.unet_checkpoint or f"{folder}/checkpoint.pt")
    command = ["01_ddpm_mnist.py", *preset, "--out-dir", str(path.parent)]
    if not path.is_file() and not (args.train_unet or preset):
        fail(f"{path} does not exist: run `python {' '.join(command)}` first, or add --train-unet")
    ckpt = read_checkpoint(path) if path.is_file() else None
    if ckpt is None or (ckpt.get("epoch", 0) < ckpt["args"].get("epochs", 0) and (args.train_unet or preset)):
        train_unet(args, command + ["--resume"] * (ckpt is not None), path)
        ckpt = read_checkpoint(path)
    saved = ckpt["args"]
    if saved.get("script") != "01_ddpm_mnist":
        fail(f"{path} was written by {saved.get('script', 'another program')}, not 01_ddpm_mnist.py: pass 01's")
    try:
        unet = DenoisingUNet(hidden=saved["hidden"])
        unet.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as e:   # no weights, other layer names or shapes
        fail(f"{path}: its weights do not fit 01_ddpm_mnist.py's UNet ({type(e).__name__}); pass 01's checkpoint")
    info = {"path": str(path), "epochs_trained": ckpt["epoch"], "final_loss": ckpt["history"]["epoch"][-1],
            **{k: saved[k] for k in ("epochs", "quick", "hidden", "T", "beta_1", "beta_T")}}
    if info["epochs_trained"] < info["epochs"]:
        print(f"note: {path} holds {info['epochs_trained']} of its {info['epochs']} epochs (01 was interrupted); "
              f"it is guided as it is (01_ddpm_mnist.py --resume, with its flags, finishes it)")
    unet = to_device(unet, device).eval().requires_grad_(False)
    # config.json records (and --resume checks) the DDPM's path and schedule, which p_φ is trained for
    args.unet_checkpoint, args.T, args.beta_1, args.beta_T = str(path), saved["T"], saved["beta_1"], saved["beta_T"]
    return unet, ddpm_schedule(saved["T"], saved["beta_1"], saved["beta_T"]), info


def train_unet(args, command, path):
    """Run `python <command>` (01_ddpm_mnist.py) as its own process, in its own session: Ctrl-C stops this run,
    which then stops 01 (whose files are whole: each is written atomically) and prints the one line to go on."""
    command = command + ["--device", args.device, "--data-dir", args.data_dir]
    print(f"{'an unfinished' if path.is_file() else 'no'} DDPM at {path}: running `python {' '.join(command)}` "
          f"first", flush=True)
    try:
        status = subprocess.run([sys.executable, str(Path(__file__).with_name(command[0])), *command[1:]],
                                start_new_session=True).returncode
    except KeyboardInterrupt:   # subprocess.run has stopped 01
        print(f"\ninterrupted while 01_ddpm_mnist.py trained the DDPM of this run (nothing of this run was written): "
              f"run the same command again; it {'continues that training' if path.is_file() else 'trains it'} "
              f"first", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if status != 0 or not path.is_file():
        fail(f"`python {' '.join(command)}` stopped (exit status {status}) before its DDPM was done: see its error "
             f"above")


def guided_sweep(args, unet, p_phi, sched, facts, device, out):
    """Handout A 2(c): every digit at every s, uint8 (S, D·per, 28, 28); digit d's k-th sample has the same x_T
    and z's at every s. Each s is kept in out/sweep/ under a key of plain facts (--resume reuses it)."""
    y = torch.tensor(args.digits, device=device).repeat_interleave(args.per_class)   # d d d … per digit
    x_T, images = fixed_noise(len(y), args.seed + 1, device), []
    for s in args.scales:
        path, key, t0 = out / "sweep" / f"s_{s:g}.npz", dict(facts, s=s), time.time()
        part = load_part(path, key)                                  # None unless --resume finds it drawn
        if part is None:
            generator = torch.Generator(device).manual_seed(args.seed + 2)           # the same z's at every s
            x = torch.cat([classifier_guided_sample(unet, p_phi, xb, yb, s, sched, generator=generator)
                           for xb, yb in zip(x_T.split(args.sample_batch), y.split(args.sample_batch))])
            check_finite(x, f"the samples at s = {s:g}")
            part = save_part(path, key, to_uint8(x))
            print(f"guided sampling: s = {s:g} drawn ({len(y)} samples, {time.time() - t0:.0f} s)", flush=True)
        images.append(part)
    return np.stack(images)


def evaluate(args, images, p_phi, T, x_train, y_train, x_test, y_test, judge, device):
    """Handout A 2(c)-(d): per s and per γ of --cfg-samples, the judge's accuracy, FD-judge of each digit against
    its test images and within-digit diversity; per s, p_φ's own verdict at t = 1; and real images' numbers."""
    f_test, y_test = judge.features(x_test), y_test.cpu()
    real = {d: f_test[y_test == d] for d in args.digits}
    floor = [fd_from_features(judge.features(x_train[y_train == d][:args.per_class]), real[d]) for d in args.digits]
    reference = {"judge_accuracy": judge.class_accuracy(x_test, y_test), "fd_judge_floor": float(np.mean(floor)),
                 "diversity_per_digit_mean": float(np.mean([mean_pairwise_distance(real[d]) for d in args.digits]))}
    y, rows = torch.tensor(args.digits).repeat_interleave(args.per_class), []
    sets = [("s", s, from_uint8(per_s, device), y) for s, per_s in zip(args.scales, images)]   # as saved: 8 bits
    if args.cfg_samples:
        with np.load(args.cfg_samples) as z:
            x, labels, w = from_uint8(z["images"]), torch.as_tensor(z["labels"]), torch.as_tensor(z["guidance"])
        sets += [("guidance", g, x[(w == g) & torch.isin(labels, y)], labels[(w == g) & torch.isin(labels, y)])
                 for g in sorted(set(w.tolist()))]
    for name, value, x, ys in sets:
        f, hit = judge.features(x), (judge.predict(x) == ys).float()
        fd = [fd_from_features(f[ys == d], real[d]) for d in args.digits]
        diversity = [mean_pairwise_distance(f[ys == d]) for d in args.digits]
        rows.append({name: value, "n": len(x), "judge_accuracy": hit.mean().item(), "fd_judge_per_digit": fd,
                     "fd_judge_per_digit_mean": float(np.mean(fd)), "diversity_per_digit": diversity,
                     "diversity_per_digit_mean": float(np.mean(diversity))})
        if name == "s":                                              # p_φ's own verdict, for contrast only
            rows[-1]["p_phi_accuracy_t1"] = p_phi.accuracy(x, 1 / T, ys)
    return rows[:len(args.scales)], reference, rows[len(args.scales):]


def guidance_table(rows, reference, per_class, cfg):
    """The fidelity–diversity table as markdown; 02's rows (classifier-free guidance, 2(d)) below s's."""
    lines = ["| guidance | judge accuracy | FD-judge per digit (mean) | diversity per digit (mean) "
             "| p_φ accuracy (t = 1) |", "|--|--:|--:|--:|--:|"]
    for r in rows + cfg:
        label, verdict = (f"s = {r['s']:g}", f"{100 * r['p_phi_accuracy_t1']:.1f}%") if "s" in r else \
            (f"CFG γ = {r['guidance']:g}", "—")
        lines.append(f"| {label} | {100 * r['judge_accuracy']:.1f}% | {r['fd_judge_per_digit_mean']:.2f} | "
                     f"{r['diversity_per_digit_mean']:.2f} | {verdict} |")
    source = ", CFG rows from 02_cfg_mnist.py's samples.npz" if cfg else ""
    return "\n".join(lines) + (
        f"\n\n{per_class} samples per digit and s{source}. Real test images: judge accuracy "
        f"{100 * reference['judge_accuracy']:.1f}%, diversity per digit {reference['diversity_per_digit_mean']:.2f}. "
        f"FD-judge (a Fréchet distance over judge features, not FID) is biased upwards for small sets: "
        f"{per_class} real images per digit score {reference['fd_judge_floor']:.2f}.\n")


def save_figures(args, out, images, rows, reference, acc_t):
    """Per-s grids (rows = digits), the s × digit overview, and the three line plots."""
    grid = images.reshape(len(args.scales), len(args.digits), args.per_class, 28, 28)   # (S, D, per, 28, 28)
    for s, per_s in zip(args.scales, grid):
        save_mosaic(per_s[:, :args.n_cols].reshape(-1, 28, 28), out / f"samples_s{s:g}.png",
                    ncols=min(per_s.shape[1], args.n_cols), row_labels=args.digits,
                    title=f"classifier guidance, s = {s:g} (row = target digit)")
    save_labelled_grid(grid[:, :, 0], out / "guidance_sweep.png", row_labels=[f"s={s:g}" for s in args.scales],
                       col_labels=args.digits, suptitle="classifier guidance: digits (columns) × scale s (rows)")
    save_line_plot(args.scales, {"judge (independent)": [100 * r["judge_accuracy"] for r in rows],
                                 "p_φ at t = 1 (the guide itself)": [100 * r["p_phi_accuracy_t1"] for r in rows]},
                   out / "accuracy_vs_scale.png", "guidance scale s", "accuracy (%)", "samples of their target digit")
    save_line_plot(args.scales, {"guided samples": [r["diversity_per_digit_mean"] for r in rows],
                                 "real test images": [reference["diversity_per_digit_mean"]] * len(rows)},
                   out / "diversity_vs_scale.png", "guidance scale s", "mean pairwise judge-feature distance")
    save_line_plot([r["t"] for r in acc_t], {"p_φ": [100 * r["accuracy"] for r in acc_t]},
                   out / "classifier_accuracy_vs_t.png", "timestep t", "test accuracy (%) of p_φ(y | x_t, t)")


def main(argv=None):
    args = parse_args(argv)
    # --- setup, the frozen DDPM, the data and the run folder, checked before anything is written ---
    device = pick_device(args.device)
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    # Handout A 2(a): 01's DDPM, frozen; a copy of every tensor, compared with it at the end
    unet, sched, unet_info = load_frozen_unet(args, device)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    T, alpha_bar = sched.T, sched.alpha_bar.float().to(device)       # ᾱ_t of the DDPM's own schedule
    seed_everything(args.seed)
    (x_train, y_train), (x_test, y_test) = (synthetic_mnist(256, device), synthetic_mnist(128, device, seed=1)) \
        if args.dry_run else (load_mnist("mnist", args.data_dir, train, device) for train in (True, False))
    check_judge("mnist", args.dry_run)
    out = run_folder(args, __file__, MATCH)
    # --- (b) p_φ(y | x_t, t) and its optimiser ---
    p_phi = to_device(NoisyClassifier(hidden=args.classifier_hidden), device)
    optimizer = torch.optim.Adam(p_phi.parameters(), lr=args.classifier_lr)
    scaler = grad_scaler(device)
    start, history = 0, {"batch": [], "epoch": [], "seconds": []}
    if args.resume:
        ckpt = load_checkpoint(out / "checkpoint_classifier.pt", model=p_phi, optimizer=optimizer,
                               scaler=scaler)
        start, history = ckpt["epoch"], ckpt["history"]
    open_run(args, out)                                              # every check passed: the folder is this run's
    print(f"p_φ on {device}: {count_parameters(p_phi):,} parameters, {to_go(start, args.classifier_epochs)}")
    # --- train p_φ: Handout A 2(b) ---
    for epoch in range(start + 1, args.classifier_epochs + 1):
        torch.manual_seed(args.seed + epoch)                        # its own random stream: --resume continues it
        for group in optimizer.param_groups:                        # decays to about lr/10, as 01's does
            group["lr"] = decayed_lr(args.classifier_lr, 0.1, epoch, args.classifier_epochs)
        p_phi.train()
        steps = -(-len(x_train) // args.classifier_batch_size)
        t0, progress = time.time(), Progress(steps, f"p_φ epoch {epoch}", lr_flag="--classifier-lr")
        for idx in torch.randperm(len(x_train), device=device).split(args.classifier_batch_size):
            # Handout A 2(b): a training image x_0 and its label y
            x0, y = x_train[idx], y_train[idx]
            # Handout A 2(b): t ~ U{1, ..., T}
            t = torch.randint(1, T + 1, (len(x0),), device=device)
            # Handout A 2(b): x_t by the forward process (Handout D Algorithm 1, lines 5–6), the DDPM's schedule
            eps = torch.randn_like(x0)
            xt = q_sample(x0, t, alpha_bar, eps)                        # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
            # Handout A 2(b): train p_φ to predict y from (x_t, t): the cross-entropy −log p_φ(y | x_t, t)
            loss = p_phi.loss(xt, t, T, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()                                # an Adam step on it
            scaler.step(optimizer)
            scaler.update()
            progress.step(len(x0), loss=loss)
        history["batch"].append(progress.losses())
        history["epoch"].append(float(np.mean(history["batch"][-1])))
        history["seconds"].append(time.time() - t0)
        print(f"p_φ epoch {epoch}/{args.classifier_epochs}: mean cross-entropy {history['epoch'][-1]:.4f}")
        save_losses_csv(history, out / "losses.csv")
        if epoch == args.classifier_epochs:                         # the curve once, when p_φ is trained
            save_loss_curves(history, out / "loss_curve.png", ylabel="cross-entropy of p_φ(y | x_t, t)")
        save_checkpoint(out / "checkpoint_classifier.pt", args, bound="classifier_epochs", epoch=epoch,
                        history=history, model=p_phi, optimizer=optimizer, scaler=scaler)
    p_phi.eval()                                                      # the sampler's gradients need eval mode
    # p_φ's accuracy on 1,000 test images noised to 10 timesteps (a figure; Handout A 2(b) asks for none)
    x, y, eps = x_test[:1000], y_test[:1000], fixed_noise(min(1000, len(x_test)), args.seed + 3, device)
    acc_t = [{"t": t, "accuracy": p_phi.accuracy(q_sample(x, torch.full_like(y, t), alpha_bar, eps), t / T, y)}
             for t in sorted({max(1, round(k * T / 10)) for k in range(1, 11)})]
    # --- (c) guided sampling, and the judge's numbers ---
    facts = {"unet": [args.unet_checkpoint, unet_info["epochs_trained"], unet_info["final_loss"]],
             "classifier_epoch": len(history["epoch"]), "device": device.type,
             **{k: getattr(args, k) for k in ("digits", "per_class", "seed", "sample_batch")}}
    images = guided_sweep(args, unet, p_phi, sched, facts, device, out)
    judge = get_judge("mnist", args.data_dir, device, args.dry_run)
    rows, reference, cfg = evaluate(args, images, p_phi, T, x_train, y_train, x_test, y_test, judge, device)
    # --- outputs, and Handout A 2(a)'s check: every tensor of the DDPM as it was loaded ---
    save_npz(out / "samples.npz", images=images.reshape(-1, 28, 28), scale=np.repeat(args.scales, images.shape[1]),
             labels=np.tile(np.repeat(args.digits, args.per_class), len(args.scales)))
    save_figures(args, out, images, rows, reference, acc_t)
    write_bytes(guidance_table(rows, reference, args.per_class, cfg).encode(), out / "guidance_table.md")
    frozen = {"bit_identical": all(torch.equal(before[k], v) for k, v in unet.state_dict().items()),
              "requires_grad": any(p.requires_grad for p in unet.parameters())}
    metrics = {"unet": unet_info, "frozen_unet": frozen, "judge": judge.card, "per_class": args.per_class,
               "classifier": {"parameters": count_parameters(p_phi), "epochs": len(history["epoch"]),
                              "train_seconds": round(sum(history["seconds"]), 1), "accuracy_by_t": acc_t},
               "per_scale": rows, "real_test_images": reference,
               "cfg_comparison": {"samples": args.cfg_samples, "per_guidance": cfg} if cfg else None}
    save_json(metrics, out / "metrics.json")
    print(f"\n{(out / 'guidance_table.md').read_text()}\nfrozen DDPM bit-identical: {frozen['bit_identical']}")
    if not frozen["bit_identical"] or frozen["requires_grad"]:
        fail("the frozen DDPM's weights changed, or were left trainable, during the run (see metrics.json)")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
