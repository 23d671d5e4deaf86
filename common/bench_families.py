"""What common/bench.py measures for one model family: its networks built as the scripts build them,
training images/s and FLOPs through the scripts' own epoch loops, and sampling images/s.
"""
import argparse
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import gan_eval, gan_runs, gan_train
from .bench_device import clock
from .samplers import generate
from .schedules import Schedule, cosine_schedule, ddpm_schedule
from .train import train_one_epoch
from .unet import ConditionalDenoisingUNet, DenoisingUNet
from .unet_multires import MultiResUNet
from .utils import Progress, count_parameters, cuda_speedups, make_grad_scaler, to_device

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
