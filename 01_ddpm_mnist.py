"""Handout D §2: an unconditional DDPM on MNIST, trained from scratch.

    python 01_ddpm_mnist.py --epochs 20          # the handout's configuration
    python 01_ddpm_mnist.py --quick              # laptop CPU: narrower UNet, 2 epochs, T = 100
    python 01_ddpm_mnist.py --dry-run            # seconds, synthetic data (what the tests run)

Training is Algorithm 1 (Adam 1e-3, batch 128, LR decayed exponentially to 0.1× over the
run); sampling is Algorithm 2. Runtime: see README.md (measured, per device).

Writes to results/01_ddpm_mnist/ (or --out-dir):
    config.json, losses.csv, loss_curve.png, samples_epoch_001.png ... (fixed noise),
    checkpoint.pt (atomic; --resume continues exactly), samples.npz (uint8 `images`, N×28×28),
    samples_final.png, metrics.json (FD-judge of the samples vs the MNIST test set).
"""
from itertools import chain

import torch

from common.cli import check_schedule_args, diffusion_parser, parse_with_presets, positive_int
from common.data import as_saved, load_dataset, synthetic_dataset, to_uint8
from common.files import save_json, save_npz
from common.judge import get_judge
from common.plotting import save_grid
from common.samplers import fixed_noise, generate, noise_generator, sampler_label
from common.schedules import ddpm_schedule
from common.train import ddpm_loss, epoch_grid_path, run_epochs, undrawn_grid
from common.train_state import start_training
from common.unet import DenoisingUNet
from common.utils import count_parameters, interruptible, save_config, start_run, to_device

ANCESTRAL = "Algorithm 2"   # the sampler unless --sampler ddim: figure titles and metrics.json say which
QUICK = dict(hidden=32, epochs=2, T=100, beta_1=3e-4, beta_T=0.06, sample_epochs=[1, 2], n_samples=200)
DRY_RUN = dict(hidden=8, epochs=2, T=10, batch_size=64, sample_epochs=[1, 2], n_samples=16,
               n_grid=8, eval_batch=16, sample_steps=5)


def parse_args(argv):
    p = diffusion_parser(__doc__.split("\n")[0])
    p.add_argument("--n-grid", type=positive_int, default=40, help="samples per epoch grid")
    p.add_argument("--n-samples", type=positive_int, default=1000, help="final samples in samples.npz")
    p.add_argument("--eval-batch", type=positive_int, default=None,
                   help="samples drawn per batch (default: 1,000 on CUDA, 100 on CPU)")
    args = parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_schedule_args)
    if args.n_samples < 2:
        p.error("--n-samples must be at least 2 (FD-judge needs a covariance)")
    return args


def load_data(args, device):
    """The whole training set as one (N, 1, 28, 28) tensor in [-1, 1] on the device."""
    if args.dry_run:
        return synthetic_dataset(256, device)[0]
    return load_dataset("mnist", args.data_dir, train=True, device=device)[0]


def draw_samples(args, model, sched, x_T, seed):
    """Algorithm 2 (or DDIM with --sampler ddim) in batches of --eval-batch samples; `seed` seeds the z's."""
    b, z_generator = args.eval_batch, noise_generator(seed, x_T.device)
    return torch.cat([generate(model, x_T[i:i + b], sched, args.sampler, args.sample_steps, args.eta,
                               generator=z_generator) for i in range(0, len(x_T), b)])


def evaluate(args, samples, device):
    """FD-judge of the samples against the MNIST test set, and the judge's digit histogram."""
    judge = get_judge("mnist", args.data_dir, device, dry_run=args.dry_run)
    x_real = synthetic_dataset(256, device)[0] if args.dry_run else \
        load_dataset("mnist", args.data_dir, train=False, device=device)[0]
    digits = judge.predict(samples).cpu()
    return {"judge": judge.card, "sampler": sampler_label(args, ANCESTRAL), "n_samples": len(samples),
            "fd_judge_vs_mnist_test": judge.fd(samples, x_real),
            "judge_digit_histogram": torch.bincount(digits, minlength=10).tolist()}


def main(argv=None, how_to_continue="continue with --resume"):
    """how_to_continue: the advice a Ctrl-C during an epoch prints (03, which trains this DDPM for itself, says
    to rerun 03)."""
    args = parse_args(argv)
    # --- setup ---
    device, out = start_run(args, __file__)          # device, seed, results/<script>/, config.json (fresh runs)
    # --- data ---
    x_train = load_data(args, device)
    # --- model, schedule, optimiser ---
    model = to_device(DenoisingUNet(hidden=args.hidden), device)
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T, device)
    training = start_training(model, args, device, out / "checkpoint.pt")
    if args.resume:                                  # config.json only once the checkpoint is accepted
        save_config(args, out)
    print(f"DenoisingUNet D={args.hidden}: {count_parameters(model):,} parameters, T={args.T}, "
          f"{len(x_train):,} images on {device}, {training.plan()}")
    # --- train (Algorithm 1), with a grid of samples from fixed noise after chosen epochs ---
    x_T_grid = fixed_noise(args.n_grid, args.seed, device)
    epochs = run_epochs(training, ddpm_loss, {"x0": x_train}, how_to_continue=how_to_continue, sched=sched)
    # first the grid a Ctrl-C cut short (after a --resume; usually none), then each newly trained epoch
    for epoch in chain(undrawn_grid(training, args.sample_epochs, out), epochs):
        if epoch in args.sample_epochs:
            grid = draw_samples(args, model, sched, x_T_grid, seed=args.seed + 2)   # same x_T and z's each time
            save_grid(to_uint8(grid), epoch_grid_path(out, epoch),
                      suptitle=f"DDPM samples after epoch {epoch} ({sampler_label(args, ANCESTRAL)}, fixed noise)")
    # --- final samples (Algorithm 2, or DDIM) and metrics ---
    x_T = fixed_noise(args.n_samples, args.seed + 1, device)
    samples = as_saved(draw_samples(args, model, sched, x_T, seed=args.seed + 3))   # measured as saved: 8 bits
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:100]), out / "samples_final.png",
              suptitle=f"DDPM samples (final model, {sampler_label(args, ANCESTRAL)})")
    metrics = evaluate(args, samples, device)
    save_json(metrics, out / "metrics.json")
    print(f"FD-judge vs MNIST test ({len(samples)} samples): {metrics['fd_judge_vs_mnist_test']:.2f}; "
          f"outputs in {out}")
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; --resume continues from the last checkpoint"):
        main()
