"""DDIM (Song et al. 2021) against the handout's ancestral sampler, on one trained model of 01 or 02.

    python -m tools.sampler_compare results/02_cfg_mnist/checkpoint.pt --ddim-steps 25 50 --eta 0 1   # or 01's
    python -m tools.sampler_compare --dry-run                            # seconds: an untrained tiny model

Every sampler starts from the same x_T for each (digit, k) and, on a 02 model, samples at one guidance γ (Algorithm
4; DDIM replaces only the update rule). Rows: the MNIST judge's accuracy, FD-judge against the test set, seconds
(target: DDIM-50 within 1 point of accuracy and 10% of FD-judge of DDPM, at least 5× faster). Sharing x_T pairs
the samplers' right/wrong outcomes: the gap gets a paired 95% interval (Agresti and Min, Statistics in Medicine 24,
2005; ±1.5 points at 1,000 samples and 97% accuracy), Bonferroni-widened over the m DDIM rows, and a verdict:
within, worse, better, or unresolved (it straddles ±1 point). A 01 model has no asked-for digit: FD-judge only.
"""
import math
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

from common import cli
from common.data import load_mnist, synthetic_mnist, to_uint8
from common.judge import get_judge
from common.plotting import save_labelled_grid
from common.run import Progress, fail, pick_device, read_checkpoint, save_json, to_device
from common.samplers import ddim_sample, ddpm_cfg_sample, ddpm_sample, fixed_noise
from common.schedules import ddpm_schedule
from common.unets import ConditionalDenoisingUNet, DenoisingUNet

DEFAULT_CHECKPOINT = "results/02_cfg_mnist/checkpoint.pt"
MODELS = {"01_ddpm_mnist": DenoisingUNet, "02_cfg_mnist": ConditionalDenoisingUNet}


def parse_args(argv):
    p = cli.make_parser(__doc__)
    p.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="checkpoint.pt of 02_cfg_mnist.py or "
                   "01_ddpm_mnist.py (with --dry-run, none given: an untrained tiny 02 model)")
    p.add_argument("--guidance", type=cli.scale, default=5.0, help="γ of Algorithm 4, the same for every sampler")
    p.add_argument("--per-class", type=cli.positive_int, default=100, help="samples per digit (class) and sampler")
    p.add_argument("--ddim-steps", type=cli.positive_int, nargs="+", default=[50], help="DDIM model calls per sample")
    p.add_argument("--eta", type=cli.unit_interval, nargs="+", default=[1.0], help="DDIM η values: 1 adds fresh "
                   "noise each step, like the ancestral sampler; 0 is deterministic")
    p.add_argument("--sample-batch", type=cli.positive_int,
                   help="samples computed in one pass (default: 1,000 on CUDA, 100 on CPU)")
    p.add_argument("--seed", type=cli.seed, default=0, help="seeds x_T and every sampler's noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root (the MNIST test set)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--grid", help="also save a PNG: a row per sampler, the same x_T down each column")
    p.add_argument("--dry-run", action="store_true", help="seconds: --per-class 2 --ddim-steps 5, synthetic images")
    args = p.parse_args(argv)
    if args.dry_run:                      # the preset's values, unless given on the command line
        p.set_defaults(per_class=2, ddim_steps=[5], checkpoint=None)
        args = p.parse_args(argv)
    for flag, path in (("--json", args.json), ("--grid", args.grid)):
        if path and not Path(path).parent.is_dir():
            p.error(f"{flag} {path}: there is no folder {Path(path).parent}")
    return args


def paired_gap(right, right_ref, z=1.96):
    """(gap in points, paired interval (lo, hi), discordant pairs) from the right/wrong (bool tensors) of two
    samplers on the same x_T's. Agresti & Min: a Wald interval after adding 1/2 to each of the four cells."""
    n = len(right)
    lost, gained = (right_ref & ~right).sum().item(), (~right_ref & right).sum().item()
    p_lost, p_gained = (lost + 0.5) / (n + 2), (gained + 0.5) / (n + 2)
    centre = p_gained - p_lost
    half = z * ((p_lost + p_gained - centre ** 2) / (n + 2)) ** 0.5
    return 100 * (gained - lost) / n, (100 * (centre - half), 100 * (centre + half)), lost + gained


def bonferroni_z(m, level=0.95):
    """The two-sided normal quantile that keeps `level` for m intervals at once (each at 1 − (1 − level)/m)."""
    return NormalDist().inv_cdf(1 - (1 - level) / (2 * m))


def poisson_upper(k, alpha=0.025):
    """Exact one-sided upper bound on a Poisson mean after k events: the λ with P(X ≤ k; λ) = alpha."""
    lo, hi = 0.0, k + 10.0 * (k + 1) ** 0.5 + 10.0
    for _ in range(60):                                   # bisection: P(X ≤ k; λ) falls as λ grows
        lam = (lo + hi) / 2
        cdf = sum(math.exp(-lam) * lam ** i / math.factorial(i) for i in range(k + 1))
        lo, hi = (lam, hi) if cdf > alpha else (lo, lam)
    return hi


def verdict(interval, discordant, n, limit=1.0, min_discordant=10, alpha=0.025):
    """'within' ±limit points, 'worse' or 'better' only when the whole interval says so. With few discordant pairs
    'within' needs the exact Poisson bound (at the interval's own tail) on their rate, which bounds |gap|."""
    lo, hi = interval
    if hi < -limit or lo > limit:
        return "worse" if hi < -limit else "better"
    if discordant < min_discordant:
        return "within" if 100 * poisson_upper(discordant, alpha) / n <= limit else "unresolved"
    return "within" if -limit <= lo and hi <= limit else "unresolved"


def load_model(path, device):
    """(model, schedule) from a checkpoint of 01_ddpm_mnist.py (unconditional) or 02_cfg_mnist.py."""
    ckpt = read_checkpoint(path)
    a = ckpt["args"]
    if a.get("script") not in MODELS or "model" not in ckpt or not {"hidden", "T", "beta_1", "beta_T"} <= set(a):
        fail(f"{path} is a checkpoint of {a.get('script', 'another program')}, not of 01_ddpm_mnist or 02_cfg_mnist")
    model = MODELS[a["script"]](hidden=a["hidden"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:   # other layers or widths than its args say
        fail(f"{path}: its weights do not fit {a['script']}'s UNet of width {a['hidden']}; is the file damaged?")
    return to_device(model, device).eval(), ddpm_schedule(a["T"], a["beta_1"], a["beta_T"])


def clock(device):
    if device.type == "cuda":             # CUDA runs asynchronously: time only finished work
        torch.cuda.synchronize(device)
    return time.perf_counter()


def draw(model, sched, x_T, c, w, name, steps, eta, batch, seed):
    """(samples, seconds) of DDIM when eta is given, else of Algorithm 2 (c None) or 4; z seeded alike in each."""
    generator = torch.Generator(x_T.device).manual_seed(seed)
    out, t0, progress = [], clock(x_T.device), Progress(-(-len(x_T) // batch), f"{name}, {steps} steps:")
    for x, cb in zip(x_T.split(batch), c.split(batch) if c is not None else [None] * len(x_T)):
        out.append(ddim_sample(model, x, sched, steps, eta, c=cb, gamma=w, generator=generator) if eta is not None
                   else ddpm_sample(model, x, sched, generator=generator) if cb is None
                   else ddpm_cfg_sample(model, x, cb, w, sched, generator))
        progress.step(len(x))
    return torch.cat(out), clock(x_T.device) - t0


def compare(args, model, sched, judge, x_test, device):
    """A row per sampler (DDPM first, then DDIM per --eta and --ddim-steps); each one's first sample per digit."""
    conditional = isinstance(model, ConditionalDenoisingUNet)
    y = torch.arange(10, device=device).repeat_interleave(args.per_class)   # digit d, sample k: d · K + k
    x_T, c = fixed_noise(len(y), args.seed + 1, device), F.one_hot(y, 10).float() if conditional else None
    runs = [("ddpm", sched.T, None)] + [(f"ddim η={eta:g}", k, eta) for eta in args.eta for k in args.ddim_steps]
    real, rows, firsts, right = judge.stats(x_test), [], [], []
    for name, steps, eta in runs:
        x, seconds = draw(model, sched, x_T, c, args.guidance, name, steps, eta, args.sample_batch, args.seed + 2)
        firsts.append(to_uint8(x[::args.per_class]))
        digits = judge.predict(x)
        right.append(digits == y.cpu())                                     # per sample: the asked-for digit?
        rows.append({"sampler": name, "steps": steps, "seconds": seconds, "samples_per_s": len(x) / seconds,
                     "judge_accuracy": right[-1].double().mean().item() if conditional else None,
                     "fd_judge": judge.fd(x, real), "judge_digit_histogram": digits.bincount(minlength=10).tolist()})
    m = len(rows) - 1                             # DDIM rows, each tested against DDPM: Bonferroni over them
    for row, row_right in zip(rows, right):
        row.update(speedup=rows[0]["seconds"] / row["seconds"], fd_ratio=row["fd_judge"] / rows[0]["fd_judge"],
                   comparisons=m, accuracy_gap_points=None, accuracy_gap_ci95_points=None, discordant_pairs=None,
                   verdict=None)                  # None for the reference, and for a 01 model
        if conditional and row is not rows[0]:
            gap, interval, discordant = paired_gap(row_right, right[0], z=bonferroni_z(m))
            row.update(accuracy_gap_points=gap, accuracy_gap_ci95_points=interval, discordant_pairs=discordant,
                       verdict=verdict(interval, discordant, len(row_right), alpha=0.025 / m))
    return rows, np.stack(firsts)


def table(rows, n, guidance, device, conditional):
    what = f"γ = {guidance:g}, every digit equally" if conditional else "unconditional, Algorithm 2"
    joint = f"; Δ: paired 95% interval, Bonferroni over {len(rows) - 1} DDIM rows" if conditional else ""
    lines = [f"{n:,} samples ({what}) on {device}{joint}.",
             "| sampler | model calls | seconds | × faster | judge accuracy | Δ (points, 95%) | within 1 point? "
             "| FD-judge | FD ratio | judge's digit histogram 0–9 |", "|---|--:|--:|--:|--:|--:|---|--:|--:|---|"]
    for r in rows:
        accuracy = "—" if r["judge_accuracy"] is None else f"{100 * r['judge_accuracy']:.1f}%"
        gap = "reference" if r is rows[0] else "—" if r["accuracy_gap_points"] is None else \
            "{:+.1f} ({:+.1f}, {:+.1f})".format(r["accuracy_gap_points"], *r["accuracy_gap_ci95_points"])
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.1f} | {r['speedup']:.1f}× | {accuracy} "
                     f"| {gap} | {r['verdict'] or '—'} | {r['fd_judge']:.2f} | {r['fd_ratio']:.2f} "
                     f"| {' '.join(map(str, r['judge_digit_histogram']))} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    torch.manual_seed(args.seed)
    # --- the model, the test images and the judge ---
    model, sched = load_model(args.checkpoint, device) if args.checkpoint else \
        (to_device(ConditionalDenoisingUNet(hidden=4), device).eval(), ddpm_schedule(10))   # --dry-run's
    if max(args.ddim_steps) > sched.T:
        fail(f"--ddim-steps {max(args.ddim_steps)} is more than this model's T = {sched.T}")
    x_test = synthetic_mnist(128, device, seed=1)[0] if args.dry_run else \
        load_mnist("mnist", args.data_dir, train=False, device=device)[0]
    judge = get_judge("mnist", args.data_dir, device, dry_run=args.dry_run)
    # --- every sampler from the same x_T ---
    conditional = isinstance(model, ConditionalDenoisingUNet)
    rows, firsts = compare(args, model, sched, judge, x_test, device)
    print("\n" + table(rows, 10 * args.per_class, args.guidance, device, conditional))
    if args.grid:
        save_labelled_grid(firsts, args.grid, [f"{r['sampler']}\n{r['steps']} calls" for r in rows],
                           list(range(10)) if conditional else None, "the same x_T down each column")
    if args.json:
        save_json({"checkpoint": args.checkpoint, "conditional": conditional, "guidance": args.guidance,
                   "per_class": args.per_class, "judge": judge.card, "rows": rows}, args.json)
    return rows


if __name__ == "__main__":
    main()
