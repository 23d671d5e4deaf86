"""The speed of every model family on one device, as Markdown rows.

    python -m tools.bench --device cpu --steps 3 --sample-timed-steps 5    # --dry-run: seconds, tiny models

Per family: images/s of a training step written here (Handout D Algorithm 1; 04: its dcgan_step), seconds per epoch
of its dataset, samples/s of full-T DDPM (timed as DDIM with every step and η = 1, the ancestral sampler: the same
model calls) and DDIM-50; on CUDA 'plain' (fp32 with PyTorch's default TF32 convolutions, NCHW) and 'optimised'
(channels_last + autocast, as the scripts run). Then the compute roof (matmul GFLOP/s) and the FID Inception's
images/s. Warm-ups are never timed.
"""
import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from common.cli import make_parser, positive_int
from common.inception import FIDInceptionV3
from common.run import amp_dtype, autocast, grad_scaler, memory_format, pick_device, to_device, write_bytes
from common.samplers import ddim_sample
from common.schedules import cosine_schedule, ddpm_schedule, q_sample
from common.unets import ConditionalDenoisingUNet, DenoisingUNet, MultiResUNet

FAMILIES = {   # the handouts' configurations; shape (C, H, W); n: training images per epoch
    "mnist": dict(script="01", model="unet", hidden=64, shape=(1, 28, 28), T=300, batch=128, n=60000),
    "cfg": dict(script="02", model="cond_unet", hidden=64, shape=(1, 28, 28), T=300, batch=128, n=60000),
    "gan": dict(script="04", model="gan", hidden=128, z_dim=100, shape=(1, 28, 28), batch=64, n=60000),
    "faces48": dict(script="06", model="unet", hidden=64, shape=(1, 48, 48), T=1000, batch=128, n=23000),
    "afhq32": dict(script="07", model="multires", hidden=16, shape=(3, 32, 32), T=50, batch=32, n=5153),
}
DRY_RUN, DDIM_STEPS, GUIDANCE = dict(hidden=4, z_dim=8, T=5, batch=8), 50, 5.0
HEADER = ("| family (script) | mode | batch | train img/s | s/epoch (N) | DDPM full-T samples/s | DDIM-50 samples/s "
          "| × plain (train/DDPM/DDIM) |\n" + "|---" * 8 + "|")


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES), help="the families to time")
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps per family")
    p.add_argument("--sample-timed-steps", type=positive_int, help="time only this many reverse steps, scaled to T")
    p.add_argument("--dry-run", action="store_true", help="seconds: tiny widths, T = 5, 2 timed steps")
    p.add_argument("--out", help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if args.out and not Path(args.out).parent.is_dir():
        p.error(f"--out {args.out}: there is no folder {Path(args.out).parent}")
    return args


class Plain(torch.nn.Module):
    """'plain' mode: `net` in NCHW and fp32 even inside the samplers' and dcgan_step's autocast: the same code runs."""

    def __init__(self, net):
        super().__init__()
        self.net = net.to(memory_format=torch.contiguous_format)

    def forward(self, x, *rest):
        with torch.autocast(x.device.type, enabled=False):
            return self.net(x.contiguous(), *rest)


def load_04():
    """04_dcgan_wgan.py as a module (its name starts with a digit): its build and dcgan_step."""
    path = Path(__file__).resolve().parents[1] / "04_dcgan_wgan.py"
    spec = importlib.util.spec_from_file_location("dcgan_wgan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


M04 = load_04()


def clock(device):
    if device.type == "cuda":             # CUDA runs asynchronously: time only finished work
        torch.cuda.synchronize(device)
    return time.perf_counter()


def build(fam, device, optimised):
    """The family's networks, optimisers and grad scalers as its script builds them, and its schedule."""
    no_scaler = torch.amp.GradScaler(device.type, enabled=False)   # fp32 needs no loss scaling
    if fam["model"] == "gan":             # 04's DCGAN, Handout A 3(a)
        gan = M04.build("dcgan", M04.parse_args(["--z-dim", str(fam["z_dim"]), "--hidden", str(fam["hidden"])]),
                        device)
        if not optimised:
            gan.G, gan.D, gan.scaler_G, gan.scaler_D = Plain(gan.G), Plain(gan.D), no_scaler, no_scaler
        return gan, None
    if fam["model"] == "multires":        # 07: Handout E's UNet, the cosine schedule
        model, sched = MultiResUNet(fam["shape"][0], fam["hidden"]), cosine_schedule(fam["T"])
    else:                                 # 01, 02, 06: Handout D's UNet, the linear schedule
        UNet = ConditionalDenoisingUNet if fam["model"] == "cond_unet" else DenoisingUNet
        model, sched = UNet(fam["shape"][0], fam["hidden"], fam["shape"][1]), ddpm_schedule(fam["T"])
    model = to_device(model, device) if optimised else Plain(model.to(device))
    optimizer, scaler = torch.optim.Adam(model.parameters(), lr=1e-3), grad_scaler(device) if optimised else no_scaler
    return SimpleNamespace(model=model, optimizer=optimizer, scaler=scaler), sched


def train_step(fam, net, alpha_bar, x0, y):
    """One training step: 04's dcgan_step (D, then G), or Handout D Algorithm 1 (07: with the L1 loss)."""
    if fam["model"] == "gan":
        return M04.dcgan_step(net, x0, SimpleNamespace(z_dim=fam["z_dim"], g_loss="nonsaturating"))
    t = torch.randint(1, fam["T"] + 1, (len(x0),), device=x0.device)          # line 4: t ~ U{1, ..., T}
    eps = torch.randn_like(x0)                                                # line 5: ε ~ N(0, I)
    xt = q_sample(x0, t, alpha_bar, eps)                                      # line 6
    c = (F.one_hot(y, 10).float(), torch.ones(len(y), device=y.device)) if fam["model"] == "cond_unet" else ()
    with autocast(x0.device):
        eps_pred = net.model(xt, t / fam["T"], *c)                            # line 7: ε̂ = ε_θ(x_t, t[, c])
    loss = (F.l1_loss if fam["model"] == "multires" else F.mse_loss)(eps_pred.float(), eps)   # line 8
    net.optimizer.zero_grad(set_to_none=True)
    net.scaler.scale(loss).backward()
    net.scaler.step(net.optimizer)
    net.scaler.update()


def bench_family(name, fam, args, device, optimised, plain=None):
    """One table row and its numbers: the family trained and sampled in one mode; ratios to `plain`'s numbers."""
    net, sched = build(fam, device, optimised)
    x0 = torch.rand(fam["batch"], *fam["shape"], device=device) * 2 - 1
    y = torch.arange(fam["batch"], device=device) % 10
    alpha_bar = None if sched is None else sched.alpha_bar.float().to(device)
    train_step(fam, net, alpha_bar, x0, y)
    t0 = clock(device)
    for _ in range(args.steps):
        train_step(fam, net, alpha_bar, x0, y)
    r = dict(train=args.steps * len(x0) / (clock(device) - t0), ddpm=None, ddim=None)
    if sched is not None:                 # K steps timed and scaled to the sampler's count of model calls
        B, K = args.sample_batch, args.sample_timed_steps or sched.T
        x_T = torch.randn(B, *fam["shape"], device=device)
        c = F.one_hot(torch.arange(B, device=device) % 10, 10).float() if fam["model"] == "cond_unet" else None
        ddim_sample(net.model, x_T, sched, steps=1, c=c, gamma=GUIDANCE)
        for key, count in (("ddpm", sched.T), ("ddim", min(DDIM_STEPS, sched.T))):
            t0 = clock(device)
            ddim_sample(net.model, x_T, sched, steps=min(count, K), c=c, gamma=GUIDANCE)   # η = 1
            r[key] = B / ((clock(device) - t0) * count / min(count, K))
    mode = ("optimised" if optimised else "plain: fp32 (TF32 convolutions)") if device.type == "cuda" else "fp32"
    cells = [f"{name} ({fam['script']})", mode,
             fam["batch"], fmt(r["train"]), f"{fmt(fam['n'] / r['train'])} (N={fam['n']:,})", fmt(r["ddpm"]),
             fmt(r["ddim"]), " / ".join(f"{r[k] / plain[k]:.2f}×" if r[k] else "—" for k in r) if plain else "—"]
    return "| " + " | ".join(map(str, cells)) + " |", r


def fmt(value):
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


@torch.no_grad()
def device_lines(device, dry_run):
    """The compute roof (a matmul's GFLOP/s in each mode's dtype); the FID Inception's images/s (untrained, fp32)."""
    n, batch, size = (256, 2, 75) if dry_run else (4096, 200 if device.type == "cuda" else 16, 299)
    lines, reps = ["", "| device | value |", "|---|---|"], 200 if device.type == "cuda" else 2   # a GPU needs many
    for dtype in [torch.float32] + ([amp_dtype(device)] if device.type == "cuda" else []):   # plain, autocast's
        a = torch.randn(n, n, device=device, dtype=dtype)
        a @ a                                                                 # warm-up
        t0 = clock(device)
        for _ in range(reps):
            a @ a
        lines.append(f"| {n}×{n} {dtype} matmul, GFLOP/s | {fmt(reps * 2 * n ** 3 / (clock(device) - t0) / 1e9)} |")
    net = to_device(FIDInceptionV3(), device).eval()
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=memory_format(device))
    net(x)                                                                    # warm-up
    t0 = clock(device)
    net(x)
    rate = batch / (clock(device) - t0)
    return lines + [f"| FID Inception v3 (fp32, {size}×{size}, batch {batch}), images/s | {fmt(rate)} |",
                    f"| FID of 10k vs 10k images (20,000 through it), s | {fmt(20_000 / rate)} |"]


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    args.sample_batch = 4 if args.dry_run else 1000 if device.type == "cuda" else 100   # as the scripts' default
    args.steps, args.sample_timed_steps = (2, None) if args.dry_run else (args.steps, args.sample_timed_steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"tools.bench on {name}, torch {torch.__version__}: {args.steps} timed training steps, sample batch "
             f"{args.sample_batch}, DDPM timed over {args.sample_timed_steps or 'all T'} steps, CFG γ = {GUIDANCE}"
             + (" — DRY RUN (tiny models)" if args.dry_run else ""), "", HEADER]
    for family in args.families:          # plain, and on CUDA optimised too
        fam = dict(FAMILIES[family], **(DRY_RUN if args.dry_run else {}))
        row, plain = bench_family(family, fam, args, device, optimised=False)
        rows = [row] + ([bench_family(family, fam, args, device, True, plain)[0]] if device.type == "cuda" else [])
        print("\n".join(rows), flush=True)
        lines += rows
    lines += device_lines(device, args.dry_run)         # the compute roof, and what FID costs
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_bytes(text.encode(), args.out)
    return text


if __name__ == "__main__":
    main()
