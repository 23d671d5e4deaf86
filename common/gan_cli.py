"""The flags and data the two GAN scripts share (04_dcgan_wgan.py, 05_cgan_wgangp_fid.py)."""
import argparse

from .data import load_dataset, synthetic_dataset
from .cli import OUT_DIR_HELP, HelpFormatter, positive_float, positive_int
from .inception_weights import find_weights


def gan_parser(description, epochs=30, batch_size=64):
    """Shared training flags; defaults are Handout A Problem 3's (model-specific ones live in gan_runs.RECIPES)."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=epochs,
                   help="training epochs of each model this run trains (a DCGAN/WGAN that 05 reuses from 04 keeps "
                        "its own)")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="real images per D step")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate of every model this run trains (default: each model's own: DCGAN/cGAN 2e-4 "
                        "(Handout B), WGAN 5e-5 (Arjovsky et al. 2017), WGAN-GP 1e-4 (Gulrajani et al. 2017))")
    p.add_argument("--z-dim", type=positive_int, default=100, help="noise dimension (handout: 50..200)")
    p.add_argument("--width", type=positive_int, default=128, help="channels of G's 7×7 map and D's last conv")
    p.add_argument("--small", action="store_true", help="one conv layer in G and D (the handout footnote)")
    p.add_argument("--dropout", type=float, default=0.3,
                   help="dropout in the DCGAN, cGAN and WGAN discriminators (the WGAN-GP critic has none)")
    p.add_argument("--g-loss", choices=["nonsaturating", "minimax"], default="nonsaturating",
                   help="DCGAN/cGAN generator loss: -log D(G(z)), or the literal log(1 - D(G(z)))")
    p.add_argument("--n-critic", type=positive_int, default=5,
                   help="critic steps per G step of WGAN and WGAN-GP (DCGAN and cGAN: 1)")
    p.add_argument("--clip", type=positive_float, default=0.01, help="WGAN weight clipping c (max_amp)")
    p.add_argument("--n-eval", type=positive_int, default=10000, help="samples per model for npz, FD, FID")
    p.add_argument("--inception-weights", default=None,
                   help="the FID Inception weights file (default: $FID_INCEPTION_WEIGHTS, else torch's hub cache)")
    p.add_argument("--n-grid", type=positive_int, default=100, help="samples per epoch grid (fixed noise)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and every noise draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root")
    p.add_argument("--out-dir", default=None, help=OUT_DIR_HELP)
    p.add_argument("--resume", action="store_true",
                   help="continue every run from its checkpoint in --out-dir (same flags; only --epochs may grow)")
    p.add_argument("--quick", action="store_true",
                   help="2-core CPU preset (its flags are listed at the end of --help)")
    p.add_argument("--dry-run", action="store_true", help="seconds: synthetic data, tiny nets, every output")
    return p


def check_gan_args(parser, args):
    """One-line errors for values argparse's types cannot catch alone."""
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.clip > 1:
        parser.error(f"--clip {args.clip}: weight clipping needs a small c (the handout explores 0.001..0.1)")
    if args.width < 4 or args.width % 4:
        parser.error(f"--width must be a multiple of 4 (G and D use width/4 and width/2), got {args.width}")
    if args.inception_weights:   # a named file that is not there: one line now, not after hours of training
        find_weights(args.inception_weights)


def load_data(args, device, train=True):
    """Fashion-MNIST (x in [-1, 1], (N, 1, 28, 28); y) on the device; --dry-run: synthetic images."""
    if args.dry_run:
        return synthetic_dataset(256 if train else 128, device, seed=0 if train else 1)
    return load_dataset("fashion", args.data_dir, train=train, device=device)
