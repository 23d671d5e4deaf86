"""DDIM (Song et al. 2021) against the handout's ancestral sampler, on one trained model.

    python -m common.sampler_compare                                   # results/02_cfg_mnist/checkpoint.pt
    python -m common.sampler_compare results/02_quick_T300/checkpoint.pt --ddim-steps 25 50 --eta 0 1
    python -m common.sampler_compare results/01_ddpm_mnist/checkpoint.pt   # an unconditional 01 model
    python -m common.sampler_compare --dry-run                         # seconds, untrained tiny model (CI)

Every sampler starts from the same x_T for each (digit, k) and samples at one guidance γ
(Handout D Algorithm 4; DDIM replaces only the update rule). Per sampler it prints the
accuracy judged by the independent MNIST classifier (common/judge.py), FD-judge against the
MNIST test set, and seconds of sampling, as BENCHMARKS.md-ready rows. The project's target: DDIM
with 50 steps within 1 point of accuracy and 10% of FD-judge of DDPM with all T steps, ≥ 5× faster.
Because every sampler starts from the same x_T, the accuracy gap comes with a paired 95% interval
(per-sample right/wrong against DDPM's on the same x_T), and the 1-point target reads "within",
"worse", "better" or "unresolved" (the interval straddles ±1 point). With several DDIM rows the
intervals are Bonferroni-widened (each at 1 − 0.05/m for m rows), so all m verdicts hold together at
95%. Resolving it takes many samples:
at 97% accuracy with independent failures the interval is about ±1.5 points at 1,000 samples.
A checkpoint of 01 (unconditional, Algorithm 2) has no asked-for digit, hence no accuracy:
its rows give FD-judge and the judge's digit histogram of 10 × --per-digit samples.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from .cli import HelpFormatter, existing_parent, finite_float, positive_int, unit_interval
from .data import load_dataset, synthetic_dataset, to_uint8
from .files import save_json
from .judge import get_judge
from .plotting import save_labelled_grid
from .samplers import fixed_noise, generate
from .schedules import ddpm_schedule
from .stats import bonferroni_z, paired_gap, verdict
from .unet import ConditionalDenoisingUNet, DenoisingUNet
from .utils import Progress, default_eval_batch, fail, interruptible, load_checkpoint, resolve_device, to_device

DEFAULT_CHECKPOINT = "results/02_cfg_mnist/checkpoint.pt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT,
                   help="checkpoint.pt of 02_cfg_mnist.py (or of 01_ddpm_mnist.py: unconditional)")
    p.add_argument("--guidance", type=finite_float, default=5.0, help="γ of Algorithm 4, the same for every sampler")
    p.add_argument("--per-digit", type=positive_int, default=100,
                   help="samples per digit and per sampler (an 01 model: 10 × this many samples per sampler)")
    p.add_argument("--ddim-steps", type=positive_int, nargs="+", default=[50], help="DDIM model calls per sample")
    p.add_argument("--eta", type=unit_interval, nargs="+", default=[0.0],
                   help="DDIM η values (0: deterministic; 1: fresh noise each step, like the ancestral sampler)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="samples drawn per batch (default: 1,000 on CUDA, 100 on CPU, where big batches are slower)")
    p.add_argument("--seed", type=int, default=0, help="seeds x_T and every sampler's noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root (for the MNIST test set)")
    p.add_argument("--json", type=existing_parent, default=None, help="also write the rows to this JSON file")
    p.add_argument("--grid", default=None,
                   help="also save a PNG: a row per sampler, the first sample of each digit (one x_T per column)")
    p.add_argument("--dry-run", action="store_true", help="seconds: an untrained tiny model, synthetic data")
    return p.parse_args(argv)


def load_model(path, device):
    """(model, schedule, training args) from a checkpoint of 02_cfg_mnist.py (conditional: its args
    have p_uncond) or of 01_ddpm_mnist.py (unconditional)."""
    ckpt = load_checkpoint(path, device, missing_hint="give the checkpoint.pt of a 01 or 02 run")
    a = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    model = None
    if {"hidden", "T", "beta_1", "beta_T"} <= set(a) and "model" in ckpt:
        model = (ConditionalDenoisingUNet if "p_uncond" in a else DenoisingUNet)(hidden=a["hidden"])
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:                      # e.g. 06's 48×48 UNet, which has other layers
            model = None
    if model is None:
        fail(f"{path} is not a checkpoint of 02_cfg_mnist.py or 01_ddpm_mnist.py "
             "(train one: python 02_cfg_mnist.py --quick)")
    trained = dict(a, epochs_done=ckpt.get("epoch", a.get("epochs")))
    return to_device(model, device).eval(), ddpm_schedule(a["T"], a["beta_1"], a["beta_T"], device), trained


def clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def draw(model, sched, x_T, y, w, sampler, steps, eta, batch, seed):
    """All samples for one sampler, in batches; returns (samples, seconds)."""
    torch.manual_seed(seed)                      # the same per-step noise z for every ancestral run
    out, t0 = [], clock(x_T.device)
    progress = Progress(-(-len(x_T) // batch), prefix=f"{sampler} {steps} steps")
    for k, i in enumerate(range(0, len(x_T), batch), start=1):
        c = None if y is None else F.one_hot(y[i:i + batch], 10)      # None: Algorithm 2, unconditional
        out.append(generate(model, x_T[i:i + batch], sched, sampler, steps, eta, c, w[i:i + batch]))
        progress.update(k, len(out[-1]))
    return torch.cat(out), clock(x_T.device) - t0


def compare(args, model, sched, judge, x_test, device, conditional=True):
    """One row per sampler: DDPM with all T steps first, then DDIM for each --eta and --ddim-steps."""
    y = torch.arange(10, device=device).repeat_interleave(args.per_digit)
    x_T, w = fixed_noise(len(y), args.seed + 1, device), torch.full((len(y),), args.guidance, device=device)
    y = y if conditional else None
    runs = [("ddpm", sched.T, 1.0)] + [("ddim", k, eta) for eta in args.eta for k in args.ddim_steps if k <= sched.T]
    real, rows, firsts, correct = judge.stats(x_test), [], [], []
    for sampler, steps, eta in runs:
        x, seconds = draw(model, sched, x_T, y, w, sampler, steps, eta, args.batch, args.seed)
        firsts.append(to_uint8(x[::args.per_digit]))                # (10, 28, 28): one per digit (block)
        digits = judge.predict(x).cpu()
        correct.append(None if y is None else digits == y.cpu())   # per sample: the asked-for digit?
        rows.append({"sampler": sampler if sampler == "ddpm" else f"ddim η={eta:g}", "steps": steps,
                     "seconds": seconds, "samples_per_s": len(x) / seconds,
                     "judge_accuracy": None if y is None else correct[-1].double().mean().item(),
                     "fd_judge": judge.fd(x, real),
                     "judge_digit_histogram": torch.bincount(digits, minlength=10).tolist()})
        accuracy = "" if y is None else f", accuracy {rows[-1]['judge_accuracy']:.3f}"
        print(f"{rows[-1]['sampler']} {steps} steps: {seconds:.1f} s{accuracy}, FD-judge {rows[-1]['fd_judge']:.2f}",
              flush=True)
    ref, m = rows[0], max(len(rows) - 1, 1)    # m DDIM rows, each tested against DDPM: Bonferroni over them
    for r, c in zip(rows, correct):
        r.update(gap_and_verdict(c, correct[0], m) if y is not None and r is not ref else
                 {"accuracy_gap_points": None if y is None else 0.0, "accuracy_gap_ci95_points": None,
                  "discordant_pairs": None if y is None else 0, "within_1_point": None})
        r.update(speedup=ref["seconds"] / r["seconds"], comparisons=m, fd_ratio=r["fd_judge"] / ref["fd_judge"])
    return rows, np.stack(firsts)


def gap_and_verdict(correct, correct_ref, m):
    """One DDIM row's accuracy gap to DDPM: its paired interval and 1-point verdict, each widened for m rows
    (Bonferroni), so that all m intervals hold together at 95% ('ci95' in the key names means that)."""
    gap, interval, discordant = paired_gap(correct, correct_ref, z=bonferroni_z(m))
    return {"accuracy_gap_points": gap, "accuracy_gap_ci95_points": interval, "discordant_pairs": discordant,
            "within_1_point": verdict(interval, discordant, len(correct), alpha=0.025 / m)}


def table(rows, n, guidance, device, conditional=True):
    what = f"γ = {guidance:g}, every digit equally" if conditional else "unconditional, Algorithm 2"
    m = rows[-1]["comparisons"]
    joint = "" if m == 1 else f" (Bonferroni over the {m} DDIM rows: 95% for all of them together)"
    gaps = f"; Δ against DDPM, with its paired 95% interval{joint}" if conditional else ""
    lines = [f"{n:,} samples ({what}) on {device}{gaps}.",
             "| sampler | model calls | seconds | × faster | judge accuracy | Δ (points, 95%) | within 1 point? "
             "| FD-judge | FD ratio | judge's digit histogram 0–9 |",
             "|---|--:|--:|--:|--:|--:|---|--:|--:|---|"]
    for r in rows:
        accuracy = "—" if r["judge_accuracy"] is None else f"{100 * r['judge_accuracy']:.1f}%"
        gap = "—" if r["accuracy_gap_points"] is None else "reference" if r["accuracy_gap_ci95_points"] is None \
            else "{:+.1f} ({:+.1f}, {:+.1f})".format(r["accuracy_gap_points"], *r["accuracy_gap_ci95_points"])
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.1f} | {r['speedup']:.1f}× | {accuracy} "
                     f"| {gap} | {r['within_1_point'] or '—'} | {r['fd_judge']:.2f} | {r['fd_ratio']:.2f} "
                     f"| {' '.join(map(str, r['judge_digit_histogram']))} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    args.batch = args.batch or default_eval_batch(device)
    torch.manual_seed(args.seed)
    if args.dry_run:
        model, sched = to_device(ConditionalDenoisingUNet(hidden=4), device).eval(), ddpm_schedule(10, device=device)
        x_test, args.per_digit, args.ddim_steps = synthetic_dataset(128, device, seed=1)[0], 2, [5]
    else:
        model, sched, trained = load_model(args.checkpoint, device)
        if max(args.ddim_steps) > sched.T:
            fail(f"--ddim-steps {max(args.ddim_steps)} is more than this model's T = {sched.T}")
        x_test = load_dataset("mnist", args.data_dir, train=False, device=device)[0]
        print(f"{args.checkpoint}: D={trained['hidden']}, T={sched.T}, "
              f"trained {trained['epochs_done']} of {trained['epochs']} epochs")
    judge = get_judge("mnist", args.data_dir, device, dry_run=args.dry_run)
    conditional = isinstance(model, ConditionalDenoisingUNet)
    with torch.no_grad():
        rows, firsts = compare(args, model, sched, judge, x_test, device, conditional)
    text = table(rows, 10 * args.per_digit, args.guidance, device, conditional)
    print("\n" + text)
    if args.grid:
        title = f"the same x_T down each column, γ = {args.guidance:g}" if conditional else \
            "the same x_T down each column (unconditional)"
        save_labelled_grid(firsts, args.grid, row_labels=[f"{r['sampler']}\n{r['steps']} calls" for r in rows],
                           col_labels=list(range(10)) if conditional else None, suptitle=title)
    if args.json:
        save_json({"checkpoint": args.checkpoint, "conditional": conditional, "guidance": args.guidance,
                   "per_digit": args.per_digit, "judge": judge.card, "rows": rows}, args.json)
    return rows


if __name__ == "__main__":
    with interruptible("no rows were written; run the command again"):
        main()
