"""Issue 8: the speed of every model family on this device, printed as BENCHMARKS.md-ready rows.

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
DataLoader with per-item transforms (these measurements live in common/bench_device.py).
Warm-up steps are never timed; CUDA timings are bracketed by torch.cuda.synchronize.
"""
import argparse
import sys
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import gan_eval, gan_runs, gan_train
from .bench_device import clock, data_rates, device_name, fid_cost, matmul_roof
from .cli import existing_parent, non_negative_int, positive_int
from .files import write_text
from .samplers import generate
from .schedules import Schedule, cosine_schedule, ddpm_schedule
from .train import train_one_epoch
from .unet import ConditionalDenoisingUNet, DenoisingUNet
from .unet_multires import MultiResUNet
from .utils import (Progress, amp_dtype, count_parameters, cuda_speedups, default_eval_batch, interruptible,
                    make_grad_scaler, resolve_device, to_device)

# The handouts' default configurations; n = training images per epoch (for seconds per epoch).
FAMILIES = {
    "mnist": dict(script="01", model="unet", hidden=64, size=28, channels=1, T=300, batch=128, n=60000),
    "cfg": dict(script="02", model="cond_unet", hidden=64, size=28, channels=1, T=300, batch=128, n=60000),
    "gan": dict(script="04", model="gan", width=128, z_dim=100, size=28, channels=1, batch=64, n=60000),
    "faces48": dict(script="06", model="unet", hidden=64, size=48, channels=1, T=1000, batch=128, n=23000),
    "afhq32": dict(script="07", model="multires", hidden=16, size=32, channels=3, T=50, batch=32, n=5153),
}
DRY_RUN = dict(hidden=4, width=16, z_dim=8, T=10, batch=16)
WARMUP, DDIM_STEPS, GUIDANCE = 1, 50, 5.0
COLUMNS = ["family (script)", "model", "mode", "batch", "train img/s", "s/epoch (N)", "train GFLOP/img", "train GFLOP/s",
           "DDPM full-T samples/s", "DDIM-50 samples/s", "× plain (train/DDPM/DDIM)"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch of every family (default: each handout's: 128, GAN 64, AFHQ 32)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps per family")
    p.add_argument("--sample-batch", type=positive_int, default=None,
                   help="default: the scripts' --eval-batch default, 1000 on CUDA, 100 on CPU")
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


def build(fam, device):
    """(networks and optimisers, schedule) as the scripts build them."""
    if fam["model"] == "gan":  # 04_dcgan_wgan.py's DCGAN recipe (Handout A 3(a))
        args = argparse.Namespace(lr=None, z_dim=fam["z_dim"], width=fam["width"], small=False, dropout=0.3,
                                  epochs=1, batch_size=fam["batch"], seed=0)
        return gan_runs.build_gan(gan_runs.gan_config("dcgan", args), device), None
    if fam["model"] == "multires":  # 07: Handout E's UNet, cosine schedule
        model, sched = MultiResUNet(fam["channels"], fam["hidden"]), cosine_schedule(fam["T"])
    else:  # 01, 02, 06: Handout D's UNet, linear schedule
        UNet = ConditionalDenoisingUNet if fam["model"] == "cond_unet" else DenoisingUNet
        model, sched = UNet(fam["channels"], fam["hidden"], fam["size"]), ddpm_schedule(fam["T"])
    model = to_device(model, device)
    return (model, torch.optim.Adam(model.parameters(), lr=1e-3), make_grad_scaler(device)), sched.to(device)


def run_epoch(fam, net, sched, x, y):
    """One pass over (x, y) with the family's own training loop."""
    if fam["model"] == "gan":
        return gan_train.train_one_epoch(net, "bench", x, y, epoch=1)
    model, optimizer, scaler = net
    loss = "l1" if fam["model"] == "multires" else "l2"          # Handout E uses the L1 loss
    y = y if fam["model"] == "cond_unet" else None
    return train_one_epoch(model, optimizer, scaler, x, y, sched, 1, fam["batch"], p_uncond=0.1, loss=loss)


def train_rate(fam, net, sched, steps, device):
    """(training images/s over `steps` batches of random data, GFLOP per training image).

    The WARMUP untimed batches are also where the floating-point operations are counted (torch's
    FlopCounterMode: convolutions, matmuls and their backward passes, forward and backward).
    """
    n, warm = steps * fam["batch"], WARMUP * fam["batch"]
    x = torch.rand(n, fam["channels"], fam["size"], fam["size"], device=device) * 2 - 1
    y = torch.randint(0, 10, (n,), device=device)
    with mock.patch.object(Progress, "update"):   # silence the loops' progress lines
        with FlopCounterMode(display=False) as flops:
            run_epoch(fam, net, sched, x[:warm], y[:warm])
        t0 = clock(device)
        run_epoch(fam, net, sched, x, y)
        return n / (clock(device) - t0), flops.get_total_flops() / warm / 1e9


def sample_rates(fam, net, sched, args, device):
    """(DDPM full-T samples/s, DDIM-50 samples/s); for the GAN (G samples/s, None)."""
    B = args.sample_batch
    if fam["model"] == "gan":
        z = torch.randn(10 * B, fam["z_dim"], device=device)
        gan_eval.generate(net.G, z[:B], batch=B)                       # warm-up
        t0 = clock(device)
        gan_eval.generate(net.G, z, batch=B)
        return len(z) / (clock(device) - t0), None
    model, x_T = net[0], torch.randn(B, fam["channels"], fam["size"], fam["size"], device=device)
    c = F.one_hot(torch.arange(B, device=device) % 10, 10).float() if fam["model"] == "cond_unet" else None
    generate(model, x_T, sched, "ddim", steps=WARMUP, c=c, w=GUIDANCE)  # warm-up
    K = min(args.sample_timed_steps or sched.T, sched.T)
    first_K = Schedule(sched.beta[:K + 1], sched.alpha[:K + 1], sched.alpha_bar[:K + 1])  # same per-step cost
    t0 = clock(device)
    generate(model, x_T, first_K, "ddpm", c=c, w=GUIDANCE)
    ddpm = B / ((clock(device) - t0) * sched.T / K)
    ddim_steps = min(DDIM_STEPS, sched.T)                               # timed over at most K of them
    t0 = clock(device)
    generate(model, x_T, sched, "ddim", steps=min(ddim_steps, K), c=c, w=GUIDANCE)
    return ddpm, B / ((clock(device) - t0) * ddim_steps / min(ddim_steps, K))


def bench_family(name, fam, args, device, optimised):
    """One table row: the family trained and sampled in one precision mode."""
    torch.manual_seed(0)
    with cuda_speedups(optimised):
        net, sched = build(fam, device)
        train, gflop = train_rate(fam, net, sched, args.steps, device)
        ddpm, ddim = sample_rates(fam, net, sched, args, device)
    params = sum(count_parameters(m) for m in ((net.G, net.D) if fam["model"] == "gan" else net[:1]))
    what = f"G+D width {fam['width']}" if fam["model"] == "gan" else f"D={fam['hidden']}, T={fam['T']}"
    mode = ("optimised" if optimised else "plain") if device.type == "cuda" else "fp32"
    return dict(family=f"{name} ({fam['script']})", model=f"{what}, {params / 1e6:.2f}M", mode=mode,
                batch=fam["batch"], train=train, epoch=fam["n"] / train, n=fam["n"], gflop=gflop,
                ddpm=ddpm, ddim=ddim)


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
    n, seconds = (256, 0.05) if args.dry_run else (4096, 0.5)
    dtypes = [torch.float32] + ([amp_dtype(device)] if device.type == "cuda" else [])   # plain, autocast's
    lines += ["", f"| {n}×{n} matmul (the compute roof) | GFLOP/s |", "|---|---|"]
    lines += [f"| {str(dtype)[6:]} | {fmt(matmul_roof(device, dtype, n, seconds))} |" for dtype in dtypes]
    fid_kw = dict(batches=1, batch_size=2, dim=64) if args.dry_run else dict(batches=3, dim=2048)
    fid = fid_cost(device, **fid_kw)
    lines += ["", "| FID (FID Inception v3, untrained weights: the same arithmetic) | value |", "|---|---|",
              f"| Inception features, images/s (fp32, 299×299, batch {fid['batch']}) | {fmt(fid['rate'])} |",
              f"| Fréchet distance of two {fid_kw['dim']}-d statistics, s | {fmt(fid['fd_seconds'])} |",
              f"| FID of 10k vs 10k images (20,000 images + one distance), s | {fmt(fid['fid_seconds'])} |"]
    lines += ["", "| data path (batch 128) | images/s |", "|---|---|"]
    lines += [f"| {what} | {fmt(rate)} |" for what, rate in data_rates(args, device)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(text, args.out)
    return text


if __name__ == "__main__":
    with interruptible("no rows were written; run the command again"):
        main()
