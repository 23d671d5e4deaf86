"""Handout A Problem 2: classifier guidance steers 01's frozen, unconditional MNIST DDPM towards a chosen digit.

The guide is a noisy classifier p_φ(y | x_t, t) (Dhariwal & Nichol 2021, https://arxiv.org/abs/2105.05233).

    python 03_classifier_guidance.py                 # needs results/01_ddpm_mnist/checkpoint.pt
    python 03_classifier_guidance.py --train-unet    # ... and trains it first (01's defaults) if missing
    python 03_classifier_guidance.py --quick         # 2-core CPU preset: 15-16 min, 91% at s = 10
                                                     # (trains 01 --quick first if it is missing)
    python 03_classifier_guidance.py --dry-run       # seconds, synthetic data (what the tests run)
    python 03_classifier_guidance.py --quick --cfg-samples results/02_cfg_mnist/samples.npz   # + 02's sweep

With --train-unet, --quick or --dry-run, 01's DDPM is trained where --unet-checkpoint points (01's own folder by
default, whatever --out-dir says), and one whose training was interrupted is finished first (01 --resume).

(a) 01's checkpoint is loaded, put in eval mode with requires_grad_(False), and its SHA-256 is
    compared at the end of the run (metrics.json: frozen_unet.bit_identical).
(b) p_φ = the UNet's down half + a time embedding (common/noisy_classifier.py), trained with
    t ~ U{1..T} and the forward process of the DDPM's own schedule (Adam). Used in eval mode.
(c) Handout D Algorithm 2 with the mean shifted by s · Σ_t · ∇_{x_t} log p_φ(y | x_t, t), Σ_t = β_t
    (common/guidance.py), for every digit at every --scales value, with the same x_T and z at each s.
(c) compared: per s, accuracy judged by an independent MNIST classifier (common/judge.py, never by p_φ),
    FD-judge of each digit's samples against the real test images of that digit, and within-digit
    diversity (mean pairwise distance of judge features); both averaged over the digits.
Measured on 2 CPU cores (docs/03_classifier_guidance.md): --quick 15-16 min, judge accuracy 91% at
s = 10; the full configuration (01's 20-epoch defaults, --per-class 50) 52 min with p_φ reused,
9.6% / 47.4% / 91.8% / 96.0% at s = 0 / 1 / 5 / 10.

Writes to results/03_classifier_guidance/ (or --out-dir):
    config.json, classifier.pt (atomic; reused by a re-run, --retrain-classifier forces a new one),
    losses.csv, loss_curve.png (p_φ's cross-entropy), classifier_accuracy_vs_t.png,
    samples_s<s>.png (one per s; rows = digits, same noise in every file), guidance_sweep.png
    (rows = s, columns = digits), accuracy_vs_scale.png, diversity_vs_scale.png,
    samples.npz (`images` uint8 N×28×28, `labels`, `scale`), metrics.json, guidance_table.md,
    sweep_parts/s_*.pt (each s's samples as it finishes: the same command rerun after an interruption
    starts at the s it was drawing).
"""
import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from common import blocks, guidance, noisy_classifier, samplers, schedules
from common.cli import OUT_DIR_HELP, HelpFormatter, non_negative_float, parse_with_presets, positive_float, positive_int
from common.data import from_uint8, load_dataset, synthetic_dataset, to_uint8
from common.files import save_json, save_npz, write_text
from common.frechet import fd_from_features, mean_pairwise_distance
from common.guidance import classifier_guided_sample
from common.judge import get_judge
from common.noisy_classifier import NoisyClassifier, noisy_classifier_loss
from common.parts import load_part, save_part, source_hash, state_hash
from common.plotting import save_line_plot, save_mosaic
from common.samplers import fixed_noise
from common.schedules import ddpm_schedule
from common.train import train_epochs
from common.train_state import start_training
from common.unet import DenoisingUNet, TimeConditionedEncoder
from common.utils import (Progress, amp_dtype, autocast, count_parameters, default_eval_batch, fail, interruptible,
                          load_checkpoint, make_out_dir, memory_format, resolve_device, seed_everything, to_device)

DEFAULT_UNET = Path("results/01_ddpm_mnist/checkpoint.pt")
DDPM_ARGS = ("hidden", "T", "beta_1", "beta_T")   # what 03 reads from 01's checkpoint's args
# how to go on after a Ctrl-C while 03 trains 01's DDPM (the line 01's run_epochs prints, after the checkpoint)
RESUME_HINT = "rerun the same 03_classifier_guidance.py command: it finishes training this DDPM first"
# the code that draws the guided sweep, hashed now (when it is loaded) for the keys of its saved parts
SWEEP_CODE = source_hash(__file__, blocks, guidance, noisy_classifier, samplers, schedules, DenoisingUNet,
                         TimeConditionedEncoder)
# --quick: 10 samples per digit; p_φ keeps its defaults (D = 32, 3 epochs, ≈ 3.5 min on 2 CPU cores), because
# a D = 16, 1-epoch p_φ reached only 74% judge accuracy at s = 10 against 91% for this one (same frozen DDPM)
QUICK = dict(per_class=10)
DRY_RUN = dict(hidden=8, epochs=3, lr=1e-2, batch_size=32, per_class=3, n_cols=3, eval_batch=64)
# p_φ's settings that must match for classifier.pt to be reused (the schedule comes from the DDPM)
CLASSIFIER_KEYS = ("hidden", "epochs", "batch_size", "lr", "lr_decay_to", "seed", "T", "beta_1", "beta_T",
                   "dry_run")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--unet-checkpoint", default=None,
                   help=f"01_ddpm_mnist.py's checkpoint.pt: default {DEFAULT_UNET} (01's folder, for any "
                        f"--out-dir: 03 reuses 01's model), and 01_dry_run/checkpoint.pt in 03's output folder for "
                        f"--dry-run. --train-unet and --quick train 01 there if it is missing or unfinished")
    p.add_argument("--train-unet", action="store_true",
                   help="train 01_ddpm_mnist.py first if its checkpoint is missing, or finish it if interrupted")
    p.add_argument("--retrain-classifier", action="store_true", help="ignore a saved classifier.pt")
    p.add_argument("--epochs", type=positive_int, default=3, help="p_φ training epochs")
    p.add_argument("--batch-size", type=positive_int, default=128, help="p_φ images per step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="p_φ Adam learning rate")
    p.add_argument("--lr-decay-to", type=float, default=0.1,
                   help="exponential LR decay, once per epoch: epoch e+1 runs at lr × this^(e/epochs)")
    p.add_argument("--hidden", type=positive_int, default=32, help="p_φ width D (the UNet's down half)")
    p.add_argument("--scales", type=non_negative_float, nargs="+", default=[0, 1, 5, 10],
                   help="guidance scales s (Handout A 2(c))")
    p.add_argument("--digits", type=int, nargs="+", default=list(range(10)), choices=range(10),
                   metavar="DIGIT", help="target digits")
    p.add_argument("--per-class", type=positive_int, default=100, help="samples per digit and per s")
    p.add_argument("--n-cols", type=positive_int, default=10, help="samples per digit in samples_s<s>.png")
    p.add_argument("--cfg-samples", default=None,
                   help="02_cfg_mnist.py's samples.npz: adds its γ sweep, judged the same way, to the table")
    p.add_argument("--eval-batch", type=positive_int, default=None,
                   help="samples drawn (and p_φ test images scored) per batch (default: 1,000 on CUDA, 100 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and every noise draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root")
    p.add_argument("--out-dir", default=None, help=OUT_DIR_HELP)
    p.add_argument("--quick", action="store_true", help="laptop-CPU preset (its flags are listed at the end of --help)")
    p.add_argument("--dry-run", action="store_true",
                   help="seconds: synthetic data, tiny models, every output file written")
    return parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_args)


def check_args(p, args):
    """Values argparse's types cannot reject alone: a one-line usage error each."""
    for name in ("scales", "digits"):
        if len(set(getattr(args, name))) < len(getattr(args, name)):
            p.error(f"--{name} has repeated values: {getattr(args, name)}")
    if args.per_class < 2:
        p.error("--per-class must be at least 2 (diversity and FD-judge need two samples per digit)")
    if not 0 < args.lr_decay_to <= 1:
        p.error(f"--lr-decay-to must be in (0, 1], got {args.lr_decay_to}")
    if args.cfg_samples:
        check_cfg_samples(p, args.cfg_samples, args.digits)
    trains_if_missing = args.train_unet or args.quick or args.dry_run
    if args.unet_checkpoint and not trains_if_missing and not Path(args.unet_checkpoint).is_file():
        p.error(f"--unet-checkpoint {args.unet_checkpoint} does not exist (01_ddpm_mnist.py writes "
                f"<out-dir>/checkpoint.pt; with --train-unet, 03 trains one at such a path)")


def check_cfg_samples(p, path, digits):
    """--cfg-samples must be 02_cfg_mnist.py's samples.npz (uint8 `images` N×28×28, N `labels` and N `guidance`)
    with samples of every --digits: checked here, before any work, not after the sweep."""
    if not Path(path).is_file():
        p.error(f"--cfg-samples {path} does not exist (02_cfg_mnist.py writes results/02_cfg_mnist/samples.npz)")
    try:
        z = np.load(path)
        arrays = {k: z[k] for k in ("images", "labels", "guidance") if k in z.files}
    except Exception as e:   # numpy raises several types for a file that is not an .npz (or a plain .npy)
        p.error(f"--cfg-samples {path} is not an .npz file ({type(e).__name__}); pass 02_cfg_mnist.py's samples.npz")
    missing = [k for k in ("images", "labels", "guidance") if k not in arrays]
    if missing:
        p.error(f"--cfg-samples {path} has no {', '.join(missing)}: it is not 02_cfg_mnist.py's samples.npz "
                f"(images, labels, guidance)")
    images, n = arrays["images"], len(arrays["images"])
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or \
            arrays["labels"].shape != (n,) or arrays["guidance"].shape != (n,):
        p.error(f"--cfg-samples {path}: needs uint8 images N×28×28 with N labels and N guidance values, got images "
                f"{images.dtype} {images.shape}, labels {arrays['labels'].shape}, guidance {arrays['guidance'].shape}")
    absent = sorted(set(digits) - set(arrays["labels"].tolist()))
    if absent:
        p.error(f"--cfg-samples {path} has no samples of digit(s) {absent} (asked for by --digits)")


# --- (a) the frozen DDPM of 01_ddpm_mnist.py ---

def unet_checkpoint_path(args, out):
    """--unet-checkpoint, else 01's own checkpoint (03 reuses 01's model; --out-dir is only 03's outputs), else
    for a --dry-run its tiny DDPM under --out-dir."""
    if args.unet_checkpoint:
        return Path(args.unet_checkpoint)
    return out / "01_dry_run" / "checkpoint.pt" if args.dry_run else DEFAULT_UNET


def started_with(saved):
    """The 01_ddpm_mnist.py flags a run was started with, from its checkpoint's args (where it runs and writes
    are left out): what its --resume needs, since it refuses other training settings."""
    argv = []
    for name, value in saved.items():
        if name in ("out_dir", "device", "data_dir", "resume") or value is None or value is False:
            continue
        argv.append(f"--{name.replace('_', '-')}")
        if value is not True:                      # --quick, --dry-run: the flag alone
            argv += map(str, value if isinstance(value, list) else [value])
    return argv


def unet_to_train(args, path):
    """None when path holds a finished DDPM, else (what is wrong, the 01_ddpm_mnist.py flags that fix it):
    missing: 01 with 03's preset; unfinished (01 was interrupted): 01 --resume with the flags it was started with."""
    if not path.is_file():
        mode = ["--dry-run"] if args.dry_run else ["--quick"] if args.quick else []
        return f"no DDPM checkpoint at {path}", mode + ["--out-dir", str(path.parent)]
    _, ckpt = read_ddpm_checkpoint(path, "cpu")
    epoch, epochs = ckpt.get("epoch") or 0, ckpt["args"].get("epochs", 0)
    if epoch >= epochs:
        return None
    return (f"{path} holds {epoch} of its {epochs} epochs (its training was interrupted)",
            started_with(ckpt["args"]) + ["--resume", "--out-dir", str(path.parent)])


def load_01():
    """01_ddpm_mnist.py as a module (its name starts with a digit)."""
    spec = importlib.util.spec_from_file_location("ddpm_mnist_01", Path(__file__).with_name("01_ddpm_mnist.py"))
    ddpm_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ddpm_script)
    return ddpm_script


def train_unet_if_missing(args, path):
    """Run 01_ddpm_mnist.py's main() into path's folder when the checkpoint is missing, or with --resume when
    it is unfinished, if we may (--train-unet, --quick, --dry-run). Returns the seconds it took, or None when
    path already held a finished DDPM."""
    todo = unet_to_train(args, path)
    if todo is None:
        return None
    problem, argv = todo
    command = "python 01_ddpm_mnist.py " + " ".join(argv)
    if not (args.train_unet or args.quick or args.dry_run):
        fail(f"{problem}: run `{command}`, or pass --train-unet")
    if path.name != "checkpoint.pt":
        fail(f"01_ddpm_mnist.py writes <folder>/checkpoint.pt, not {path.name}; point --unet-checkpoint at such a path")
    where = " (01's folder, whatever --out-dir says: 03 reuses 01's model; --unet-checkpoint names another)"
    print(f"{problem}: running `{command}` first{where * (path == DEFAULT_UNET)}", flush=True)
    start = time.time()
    # a Ctrl-C in 01's epochs says what 03's user should do (01's own line says "continue with --resume")
    load_01().main(argv + ["--device", args.device, "--data-dir", args.data_dir], how_to_continue=RESUME_HINT)
    return time.time() - start


def weights_mismatch(model, state):
    """How a state dict differs from model's: 'N tensors missing, M extra, K of another shape'."""
    own = model.state_dict()
    reshaped = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    return (f"{len(own.keys() - state.keys())} tensors missing, {len(state.keys() - own.keys())} extra, "
            f"{len(reshaped)} of another shape")


def read_ddpm_checkpoint(path, device):
    """(01's unconditional UNet with path's weights, the checkpoint), or a one-line error for another file."""
    ckpt = load_checkpoint(path, device)
    saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    if not isinstance(ckpt, dict) or "model" not in ckpt or not all(k in saved for k in DDPM_ARGS):
        fail(f"{path} is not a checkpoint of 01_ddpm_mnist.py (it needs `model` and `args`)")
    unet = DenoisingUNet(hidden=saved["hidden"])
    try:
        unet.load_state_dict(ckpt["model"])
    except RuntimeError:   # another script's model (layer names or shapes); its checkpoint does not say which script
        fail(f"{path} is not a checkpoint of 01_ddpm_mnist.py: its weights do not fit 01's unconditional 28×28 UNet "
             f"of width {saved['hidden']} ({weights_mismatch(unet, ckpt['model'])}); pass the checkpoint.pt 01 wrote")
    return unet, ckpt


def load_frozen_unet(path, device):
    """01's ε_θ(x_t, t) in eval mode with requires_grad_(False), its schedule, and a description."""
    unet, ckpt = read_ddpm_checkpoint(path, device)
    saved = ckpt["args"]
    info = {"path": str(path), "epochs_trained": ckpt.get("epoch"), "quick": bool(saved.get("quick")),
            "parameters": count_parameters(unet), **{k: saved[k] for k in DDPM_ARGS}}
    unet = to_device(unet, device).eval().requires_grad_(False)
    return unet, ddpm_schedule(saved["T"], saved["beta_1"], saved["beta_T"], device), info


def frozen_ddpm(args, out, device):
    """(a) 01's DDPM, trained (or finished) first if allowed: (unet, sched, info, SHA-256 of its weights).
    The schedule comes from the checkpoint, so args' T, beta_1 and beta_T are set to its values."""
    path = unet_checkpoint_path(args, out)
    train_seconds = train_unet_if_missing(args, path)
    unet, sched, info = load_frozen_unet(path, device)
    args.T, args.beta_1, args.beta_T = info["T"], info["beta_1"], info["beta_T"]
    print(f"frozen DDPM {path}: D={info['hidden']}, {info['parameters']:,} parameters, T={sched.T}")
    if info["quick"] and not args.quick:   # e.g. left there by an earlier `03 --quick` (it trains `01 --quick`)
        print(f"note: that is a `01_ddpm_mnist.py --quick` DDPM; the full configuration's numbers need "
              f"`python 01_ddpm_mnist.py --epochs 20` (or --unet-checkpoint naming such a run)")
    return unet, sched, dict(info, train_seconds_this_run=train_seconds), state_hash(unet)


def frozen_check(unet, hash_before):
    """(a): the frozen DDPM's hash now against the one taken right after loading."""
    hash_after = state_hash(unet)
    return {"sha256_before": hash_before, "sha256_after": hash_after, "bit_identical": hash_after == hash_before,
            "requires_grad": any(p.requires_grad for p in unet.parameters())}


def load_data(args, device, train=True):
    """(x, y): the whole split as one (N, 1, 28, 28) tensor in [-1, 1] and its labels, on the device."""
    if args.dry_run:
        return synthetic_dataset(256 if train else 128, device, seed=0 if train else 1)
    return load_dataset("mnist", args.data_dir, train=train, device=device)


# --- (b) the noisy classifier p_φ(y | x_t, t) ---

def classifier_loss(clf, x0, y, sched):
    """Handout A 2(b): cross-entropy of p_φ(y | x_t, t) with t ~ U{1..T} (under autocast on CUDA)."""
    with autocast(x0.device):
        return noisy_classifier_loss(clf, x0, y, sched)[0]


def saved_classifier_matches(path, args):
    """True if `path` holds a p_φ trained with the same settings (finished or not)."""
    saved = load_checkpoint(path).get("args", {})
    differs = [k for k in CLASSIFIER_KEYS if saved.get(k) != getattr(args, k)]
    if differs:
        print(f"{path} was trained with other settings ({', '.join(differs)}): training a new one")
    return not differs


def get_classifier(args, x, y, sched, out, device):
    """p_φ from out/classifier.pt when it matches (continuing an interrupted run), else trained now."""
    clf = to_device(NoisyClassifier(hidden=args.hidden), device)
    path = out / "classifier.pt"
    reuse = path.is_file() and not args.retrain_classifier and saved_classifier_matches(path, args)
    training = start_training(clf, args, device, path, must_match=(), resume=reuse)
    if reuse:
        print(f"reusing p_φ from {path} ({training.start}/{args.epochs} epochs done; "
              f"--retrain-classifier to redo)")
    train_epochs(training, classifier_loss, {"x0": x, "y": y}, name="p_φ epoch", metric="cross-entropy {:.4f}",
                 ylabel="cross-entropy of p_φ(y | x_t, t)", how_to_continue="the same command continues it",
                 sched=sched)
    info = {"parameters": count_parameters(clf), "hidden": args.hidden, "epochs": args.epochs,
            "train_seconds": round(sum(training.history["seconds"]), 1),
            "reused": training.start == args.epochs}
    return clf.eval(), info


def tested_classifier(args, x_train, y_train, x_test, y_test, sched, out, device):
    """(b) p_φ from get_classifier, and its test accuracy per bin of t (printed, and returned for the figure)."""
    clf, info = get_classifier(args, x_train, y_train, sched, out, device)
    acc_t, info["test_accuracy"] = accuracy_by_t(clf, x_test, y_test, sched, args.eval_batch)
    print(f"p_φ: {info['parameters']:,} parameters, trained {info['train_seconds']:.0f} s, test accuracy "
          + ", ".join(f"t∈[{r['t_from']},{r['t_to']}] {100 * r['accuracy']:.0f}%" for r in acc_t if r["n"]))
    return clf, info, acc_t


@torch.no_grad()
def accuracy_by_t(clf, x, y, sched, batch, n_bins=10):
    """p_φ's test accuracy, one t ~ U{1..T} per image, in n_bins equal bins of t (a figure for 2(b), which
    asks for none)."""
    clf.eval()
    g = torch.Generator(device=x.device).manual_seed(0)
    t = torch.randint(1, sched.T + 1, (len(x),), device=x.device, generator=g)
    correct = torch.cat([noisy_classifier_loss(clf, x[i:i + batch], y[i:i + batch], sched, t[i:i + batch])[1]
                         .argmax(1) == y[i:i + batch] for i in range(0, len(x), batch)]).float()
    n_bins = min(n_bins, sched.T)
    which = (t - 1) * n_bins // sched.T            # bin k holds t in (k·T/n_bins, (k+1)·T/n_bins]
    rows = []
    for k in range(n_bins):
        pick = which == k
        rows.append({"t_from": -(-k * sched.T // n_bins) + 1, "t_to": -(-(k + 1) * sched.T // n_bins),
                     "n": int(pick.sum()), "accuracy": correct[pick].mean().item() if pick.any() else None})
    return rows, correct.mean().item()


# --- (c) guided sampling ---

def sweep_key(args, unet_hash, clf, device):
    """Everything an s's samples depend on; a part saved under another key is drawn again."""
    return {"unet": unet_hash, "classifier": state_hash(clf), "code": SWEEP_CODE, "torch": str(torch.__version__),
            "device": device.type, "precision": f"{amp_dtype(device)} {memory_format(device)}",
            **{k: getattr(args, k) for k in ("T", "beta_1", "beta_T", "digits", "per_class", "eval_batch", "seed")}}


def guided_sweep(args, unet, unet_hash, clf, sched, device, out):
    """Every digit at every s; digit d's k-th sample starts from the same x_T and sees the same z at every s.
    Each s is saved to out/sweep_parts/ as it finishes, and a rerun reuses it (common/parts.py).

    Returns samples (S·D·per, 1, 28, 28) on the device, labels and scales (CPU, s-major order), and per s
    the seconds it took to draw and whether it was reused from an earlier run.
    """
    digits, per = torch.tensor(args.digits), args.per_class
    y = digits.repeat_interleave(per).to(device)                  # d d d ... per digit
    x_T = fixed_noise(len(y), args.seed + 1, device)             # (D·per, 1, 28, 28)
    key = sweep_key(args, unet_hash, clf, device)
    paths = {s: out / "sweep_parts" / f"s_{s:g}.pt" for s in args.scales}
    parts = {s: load_part(paths[s], dict(key, scale=s)) for s in args.scales}     # None: still to draw
    reused = [parts[s] is not None for s in args.scales]
    n_batches = reused.count(False) * -(-len(y) // args.eval_batch)
    progress = Progress(n_batches, prefix="guided sampling", every=0)
    for s in args.scales:
        if parts[s] is None:
            parts[s] = save_part(paths[s], dict(key, scale=s),
                                 draw_at_scale(args, unet, clf, sched, x_T, y, s, progress))
    samples = torch.cat([parts[s]["samples"] for s in args.scales]).to(device)
    scale = torch.tensor(args.scales, dtype=torch.float32).repeat_interleave(len(y))
    return samples, y.cpu().repeat(len(args.scales)), scale, [parts[s]["seconds"] for s in args.scales], reused


def draw_at_scale(args, unet, clf, sched, x_T, y, s, progress):
    """One s of the sweep, in batches: {"samples": (D·per, 1, 28, 28) on the CPU, "seconds": its time}."""
    generator = torch.Generator(device=x_T.device).manual_seed(args.seed + 2)   # the same z's at every s
    t0, samples = time.time(), []
    for i in range(0, len(y), args.eval_batch):
        b = slice(i, i + args.eval_batch)
        samples.append(classifier_guided_sample(unet, clf, x_T[b], y[b], s, sched, generator=generator,
                                                scale_by_variance=True))
        progress.update(progress.step + 1, len(x_T[b]), extra=f"s = {s:g}")
    return {"samples": torch.cat(samples).cpu(), "seconds": time.time() - t0}


# --- (c) compared: fidelity and diversity per s, judged by an independent classifier ---

@torch.no_grad()
def real_reference(args, judge, x_train, y_train, x_test, y_test):
    """Judge features of each digit's test images, and the numbers real images get.

    fd_judge_floor: FD-judge of `per_class` real training images per digit against that digit's
    test images, the value a perfect sampler would get with this few samples.
    """
    f_test, y_test = judge.features(x_test), y_test.cpu()                      # (N_test, F)
    real = {d: f_test[y_test == d] for d in args.digits}
    floor = [fd_from_features(judge.features(x_train[y_train == d][:args.per_class]), real[d]) for d in args.digits]
    return real, {"judge_accuracy": judge.class_accuracy(x_test, y_test), "fd_judge_floor": float(np.mean(floor)),
                  "diversity_per_digit_mean": float(np.mean([mean_pairwise_distance(real[d]) for d in args.digits]))}


def judged_metrics(x, ys, digits, judge, real):
    """Judge accuracy, FD-judge per digit (vs that digit's test images) and within-digit diversity of one set."""
    f = judge.features(x)                                                       # (N, F)
    fd = [fd_from_features(f[ys == d], real[d]) for d in digits]
    diversity = [mean_pairwise_distance(f[ys == d]) for d in digits]
    hit = (judge.predict(x) == ys).float()                                      # the judge's verdict
    return {"n": len(x), "judge_accuracy": hit.mean().item(),
            "judge_accuracy_per_digit": [hit[ys == d].mean().item() for d in digits],
            "fd_judge_per_digit_mean": float(np.mean(fd)), "diversity_per_digit_mean": float(np.mean(diversity)),
            "fd_judge_per_digit": fd, "diversity_per_digit": diversity}


@torch.no_grad()
def evaluate(args, samples, y, scale, seconds_per_s, reused, clf, sched, judge, real):
    """Per s: the judged numbers, plus p_φ's own verdict at t = 1 (for contrast, not as a fidelity measure).
    A reused part's sampling_seconds are those of the run that drew it."""
    rows = []
    for s, seconds, was_reused in zip(args.scales, seconds_per_s, reused):
        pick = scale == s
        x, ys = samples[pick.to(samples.device)], y[pick]
        t1 = torch.full((len(x),), 1 / sched.T, device=x.device)
        guide_accuracy = (clf(x, t1).argmax(1).cpu() == ys).float().mean().item()
        rows.append({"s": s, **judged_metrics(x, ys, args.digits, judge, real),
                     "p_phi_accuracy_t1": guide_accuracy, "sampling_seconds": round(seconds, 1),
                     "sampling_reused": was_reused})
    return rows


@torch.no_grad()
def cfg_rows(path, args, judge, real, device):
    """The same judged numbers for 02_cfg_mnist.py's samples.npz, one row per γ (Handout A 2(d)); its keys,
    shapes and digits were checked by check_cfg_samples."""
    z = np.load(path)
    x, y, w = from_uint8(z["images"], device), torch.as_tensor(z["labels"]), torch.as_tensor(z["guidance"])
    keep = torch.isin(y, torch.tensor(args.digits))
    return [{"w": g, **judged_metrics(x[keep & (w == g)], y[keep & (w == g)], args.digits, judge, real)}
            for g in sorted(set(w.tolist()))]


def guidance_table(rows, reference, per_class, cfg=None):
    """The fidelity–diversity table as markdown; `cfg` adds 02's rows (classifier-free guidance)."""
    lines = ["| s | judge accuracy | FD-judge per digit (mean) | diversity per digit (mean) | p_φ accuracy (t = 1) "
             "| sampling (s) |", "|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['s']:g} | {100 * r['judge_accuracy']:.1f}% | {r['fd_judge_per_digit_mean']:.2f} "
                     f"| {r['diversity_per_digit_mean']:.2f} | {100 * r['p_phi_accuracy_t1']:.1f}% "
                     f"| {r['sampling_seconds']:.0f}{' (reused)' * r['sampling_reused']} |")
    lines.append(f"\n{per_class} samples per digit and s. Real MNIST test images: judge accuracy "
                 f"{100 * reference['judge_accuracy']:.1f}%, "
                 f"diversity per digit {reference['diversity_per_digit_mean']:.2f}. "
                 f"FD-judge is a Fréchet distance over the judge's features (not FID) against each digit's test "
                 f"images; it is biased upwards for small samples: {per_class} real training images per digit "
                 f"score {reference['fd_judge_floor']:.2f} (the floor here).")
    if cfg:
        lines += ["\nClassifier-free guidance (02_cfg_mnist.py's samples.npz), the same judged numbers:\n",
                  "| γ | judge accuracy | FD-judge per digit (mean) | diversity per digit (mean) | samples |",
                  "|--:|--:|--:|--:|--:|"]
        lines += [f"| {r['w']:g} | {100 * r['judge_accuracy']:.1f}% | {r['fd_judge_per_digit_mean']:.2f} "
                  f"| {r['diversity_per_digit_mean']:.2f} | {r['n']} |" for r in cfg]
    return "\n".join(lines) + "\n"


def save_figures(args, out, images, rows, reference, acc_t):
    """Per-s grids (rows = digits), the s × digit overview, and the three line plots."""
    n_d, per, digits = len(args.digits), args.per_class, ", ".join(map(str, args.digits))
    grid = images.reshape(len(args.scales), n_d, per, 28, 28)           # (S, D, per, 28, 28)
    n_cols = min(args.n_cols, per)
    for s, g in zip(args.scales, grid):
        save_mosaic(g[:, :n_cols].reshape(-1, 28, 28), out / f"samples_s{s:g}.png", ncols=n_cols,
                    row_labels=args.digits, title=f"classifier guidance, s = {s:g} (row = target digit)")
    save_mosaic(grid[:, :, 0].reshape(-1, 28, 28), out / "guidance_sweep.png", ncols=n_d,
                row_labels=[f"s={s:g}" for s in args.scales],
                title=f"classifier guidance: scale s (rows) × digit {digits} (columns)")
    save_line_plot(args.scales, {"judge (independent)": [100 * r["judge_accuracy"] for r in rows],
                                 "p_φ at t = 1 (the guide itself)": [100 * r["p_phi_accuracy_t1"] for r in rows]},
                   out / "accuracy_vs_scale.png", xlabel="guidance scale s", ylabel="accuracy (%)",
                   title="accuracy of the target digit")
    save_line_plot(args.scales, {"guided samples": [r["diversity_per_digit_mean"] for r in rows],
                                 "real test images": [reference["diversity_per_digit_mean"]] * len(rows)},
                   out / "diversity_vs_scale.png", xlabel="guidance scale s",
                   ylabel="mean pairwise judge-feature distance", title="within-digit diversity")
    known = [r for r in acc_t if r["n"]]
    save_line_plot([(r["t_from"] + r["t_to"]) / 2 for r in known], {"p_φ": [100 * r["accuracy"] for r in known]},
                   out / "classifier_accuracy_vs_t.png", xlabel="timestep t (bin centre)",
                   ylabel="test accuracy (%)", title="noisy classifier p_φ(y | x_t, t) on the test set")


def save_outputs(args, out, images, y, scale, rows, reference, acc_t, cfg):
    """samples.npz, the figures and guidance_table.md; returns the table."""
    save_npz(out / "samples.npz", images=images, labels=y.numpy(), scale=scale.numpy())
    save_figures(args, out, images, rows, reference, acc_t)
    table = guidance_table(rows, reference, args.per_class, cfg)
    write_text(table, out / "guidance_table.md")
    return table


def main(argv=None):
    args = parse_args(argv)
    run_start = time.time()
    # --- setup ---
    device = resolve_device(args.device)
    args.eval_batch = args.eval_batch or default_eval_batch(device)
    out = make_out_dir(args.out_dir, __file__, args.dry_run)
    # --- (a) the frozen DDPM ---
    unet, sched, unet_info, unet_hash = frozen_ddpm(args, out, device)
    seed_everything(args.seed)
    save_json(vars(args), out / "config.json")
    # --- data ---
    x_train, y_train = load_data(args, device)
    x_test, y_test = load_data(args, device, train=False)
    # --- (b) noisy classifier p_φ(y | x_t, t) ---
    clf, clf_info, acc_t = tested_classifier(args, x_train, y_train, x_test, y_test, sched, out, device)
    # --- (c) guided sampling (Handout A 2(c)) ---
    samples, y, scale, seconds_per_s, reused = guided_sweep(args, unet, unet_hash, clf, sched, device, out)
    # --- (c) compared: fidelity and diversity per s; (d) with --cfg-samples, against CFG ---
    judge = get_judge("mnist", args.data_dir, device, dry_run=args.dry_run)
    images = to_uint8(samples)            # judge what samples.npz holds (clamped to [-1, 1], 8 bits), as for 02
    real, reference = real_reference(args, judge, x_train, y_train, x_test, y_test)
    rows = evaluate(args, from_uint8(images, device), y, scale, seconds_per_s, reused, clf, sched, judge, real)
    cfg = cfg_rows(args.cfg_samples, args, judge, real, device) if args.cfg_samples else None
    # --- outputs, and the frozen DDPM's bit-identity check ---
    table = save_outputs(args, out, images, y, scale, rows, reference, acc_t, cfg)
    frozen = frozen_check(unet, unet_hash)
    metrics = {"unet": unet_info, "frozen_unet": frozen,
               "classifier": dict(clf_info, accuracy_by_t=acc_t), "per_class": args.per_class,
               "per_scale": rows, "real_test_images": reference, "judge": judge.card,
               "cfg_comparison": {"samples": args.cfg_samples, "per_guidance": cfg} if cfg else None,
               "total_seconds": round(time.time() - run_start, 1)}
    save_json(metrics, out / "metrics.json")
    print("\n" + table + f"\nfrozen DDPM bit-identical after the run: {frozen['bit_identical']}; "
          f"outputs in {out} ({metrics['total_seconds']:.0f} s)")
    if not frozen["bit_identical"] or frozen["requires_grad"]:
        fail("the frozen DDPM's weights changed, or were left trainable, during the run (see metrics.json)")
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; the same command reuses the saved p_φ "
                       "and every finished s of the sweep"):
        main()
