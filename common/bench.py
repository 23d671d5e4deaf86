"""The speed of every model family on this device, printed as BENCHMARKS.md-ready rows.

    python -m common.bench                                   # every family, handout configurations
    python -m common.bench --device cpu --steps 2 --sample-timed-steps 10    # a slow CPU (extrapolates)
    python -m common.bench --dry-run --out /tmp/bench.md     # seconds, tiny models (what CI runs)

Per family: training images/s of the scripts' own epoch loops (common.train, common.gan_train) on
random data of the family's shape, seconds per epoch extrapolated to the dataset size N, and
sampling images/s: full-T DDPM (Handout D Algorithm 2, or 4 for CFG, where one sample costs one
batched cond + uncond pass per step) and DDIM-50; for the GAN, G's forward pass. On CUDA every
family runs twice in the same process, 'plain' (fp32, NCHW) and 'optimised' (channels_last +
autocast, the two switches of common/utils.py, which cuda_speedups(False) turns off for 'plain'),
so their ratio is measured. The training FLOPs per image are counted (torch's FlopCounterMode), so
the achieved GFLOP/s can be read against a compute roof: the GFLOP/s of one large matmul on the
same device. Then what an FID of 10k vs 10k images costs (the FID Inception's images/s and one
Fréchet distance), and last the data path: one on-device tensor sliced by index vs a torchvision
DataLoader with per-item transforms. What is measured per family: common/bench_families.py; per device:
common/bench_device.py.
Warm-up steps are never timed; CUDA timings are bracketed by torch.cuda.synchronize.
"""
import argparse
import sys

import torch

from .bench_device import data_rates, device_name, fid_cost, matmul_roof
from .bench_families import DRY_RUN, FAMILIES, GUIDANCE, WARMUP, bench_family
from .cli import HelpFormatter, existing_parent, non_negative_int, positive_int
from .files import write_text
from .utils import amp_dtype, default_eval_batch, interruptible, resolve_device

COLUMNS = ["family (script)", "model", "mode", "batch", "train img/s", "s/epoch (N)", "train GFLOP/img",
           "train GFLOP/s", "DDPM full-T samples/s", "DDIM-50 samples/s", "× plain (train/DDPM/DDIM)"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch of every family (default: each handout's: 128, GAN 64, AFHQ 32)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps per family")
    p.add_argument("--sample-batch", type=positive_int, default=None,
                   help="samples drawn per batch (default: as the scripts' --eval-batch, 1,000 on CUDA, 100 on CPU)")
    p.add_argument("--sample-timed-steps", type=positive_int, default=None, metavar="K",
                   help="time only K reverse steps and extrapolate to T (slow CPUs; default: all T)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="DataLoader worker processes in the data-path row")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root (MNIST for the data path)")
    p.add_argument("--dry-run", action="store_true", help="seconds: tiny widths, T = 10, 2 steps, synthetic data")
    p.add_argument("--out", type=existing_parent, default=None, help="also write the markdown to this file")
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps, args.sample_batch, args.sample_timed_steps = 2, 8, None
    return args


def fmt(value):
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def family_line(r, plain=None):
    ratio = "—" if plain is None else " / ".join(
        "—" if r[k] is None else f"{r[k] / plain[k]:.2f}×" for k in ("train", "ddpm", "ddim"))
    gan = r["ddim"] is None
    cells = [r["family"], r["model"], r["mode"], str(r["batch"]), fmt(r["train"]),
             f"{fmt(r['epoch'])} (N={r['n']:,})", f"{r['gflop']:.3g}", fmt(r["train"] * r["gflop"]),
             fmt(r["ddpm"]) + (" (G)" if gan else ""), fmt(r["ddim"]), ratio]
    return "| " + " | ".join(cells) + " |"


def header(args, argv, device):
    K = f"{args.sample_timed_steps} timed reverse steps, extrapolated to T" if args.sample_timed_steps else "all T"
    threads = torch.get_num_threads()
    return ["`" + " ".join(["python -m common.bench", *argv]) + "`", "",
            f"Device: **{device_name(device)}** ({device.type}), torch {torch.__version__}, "
            f"{threads} thread{'s' * (threads > 1)}{' — DRY RUN (tiny models)' if args.dry_run else ''}.",
            f"Settings: {args.steps} timed training steps after {WARMUP} warm-up; sample batch "
            f"{args.sample_batch}; DDPM over {K}; DDIM η = 0; CFG γ = {GUIDANCE} "
            f"(a sample = one batched cond + uncond pass per step).",
            "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]


def device_lines(args, device):
    """The tables under the families': the compute roof, what an FID costs, and the data path."""
    n, seconds = (256, 0.05) if args.dry_run else (4096, 0.5)
    dtypes = [torch.float32] + ([amp_dtype(device)] if device.type == "cuda" else [])   # plain, autocast's
    lines = ["", f"| {n}×{n} matmul (the compute roof) | GFLOP/s |", "|---|---|"]
    lines += [f"| {str(dtype)[6:]} | {fmt(matmul_roof(device, dtype, n, seconds))} |" for dtype in dtypes]
    fid_kw = dict(batches=1, batch_size=2, dim=64) if args.dry_run else dict(batches=3, dim=2048)
    fid = fid_cost(device, **fid_kw)
    lines += ["", "| FID (FID Inception v3, untrained weights: the same arithmetic) | value |", "|---|---|",
              f"| Inception features, images/s (fp32, 299×299, batch {fid['batch']}) | {fmt(fid['rate'])} |",
              f"| Fréchet distance of two {fid_kw['dim']}-d statistics, s | {fmt(fid['fd_seconds'])} |",
              f"| FID of 10k vs 10k images (20,000 images + one distance), s | {fmt(fid['fid_seconds'])} |"]
    lines += ["", "| data path (batch 128) | images/s |", "|---|---|"]
    lines += [f"| {what} | {fmt(rate)} |" for what, rate in data_rates(args, device)]
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sample_batch = args.sample_batch or default_eval_batch(device)
    lines = header(args, argv, device)
    for name in args.families:
        fam = dict(FAMILIES[name], **(DRY_RUN if args.dry_run else {}))
        fam["batch"] = args.batch_size or fam["batch"]
        plain = bench_family(name, fam, args, device, optimised=False)
        rows = [family_line(plain)]
        if device.type == "cuda":
            rows.append(family_line(bench_family(name, fam, args, device, optimised=True), plain))
        print("\n".join(rows), flush=True)
        lines += rows
    lines += device_lines(args, device)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(text, args.out)
    return text


if __name__ == "__main__":
    with interruptible("no rows were written; run the command again"):
        main()
