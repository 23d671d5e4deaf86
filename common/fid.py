"""FID and FD-judge between two image sets, from the command line or from other scripts.

Handout A, Problem 4(c): the FID between 10,000 generated samples and 10,000 real test images.
FID uses the FID Inception network (common/inception.py); FD-judge is the same Fréchet distance
over the features of our own judge classifier (common/judge.py). They live on different scales:
never compare an FD-judge value with a published FID.

Command:  python -m common.fid REAL FAKE [--inception-weights PATH] [--judge-dataset mnist|fashion]
          Each side is an .npz written by our scripts (key 'images', uint8 N x 28 x 28) or one of
          mnist-test, mnist-train, fashion-test, fashion-train; at most --n images (10,000) per side.
Runtime:  FD-judge: seconds on a CPU. FID: seconds on a GPU, but about 8 images/s on a 2-core CPU
          (10k vs 10k ≈ 41 min, BENCHMARKS.md); real-data Inception statistics are cached in results/fid_stats/.
Prints:   sample counts, FID (or why it was skipped), FD-judge.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from .data import from_uint8, load_dataset
from .frechet import MIN_UNBIASED, frechet_distance
from .inception import InceptionFeatures, real_stats
from .inception_weights import FID_WEIGHTS_FILE, find_weights, where_to_put_weights
from .judge import DATASETS, get_judge
from .cli import HelpFormatter, positive_int
from .utils import fail, interruptible, resolve_device

DATASET_SIDES = [f"{name}-{split}" for name in DATASETS for split in ("test", "train")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="FID and FD-judge between two image sets.", formatter_class=HelpFormatter)
    p.add_argument("real", help=f"an .npz with key 'images' (uint8 N x 28 x 28), or one of {', '.join(DATASET_SIDES)}")
    p.add_argument("fake", help="same choices as REAL")
    p.add_argument("--inception-weights", default=None,
                   help=f"path to {FID_WEIGHTS_FILE} (default: $FID_INCEPTION_WEIGHTS, else torch's hub cache)")
    p.add_argument("--judge-dataset", choices=DATASETS, default=None,
                   help="which judge gives FD-judge (default: the dataset named on either side)")
    p.add_argument("--n", type=positive_int, default=10_000, help="use at most this many images per side")
    p.add_argument("--no-fid", action="store_true", help="skip FID even if the Inception weights are there")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return p.parse_args(argv)


def load_side(spec, data_dir, n):
    """A dataset name or an .npz of uint8 images -> float (N, 1, 28, 28) in [-1, 1] on the CPU (first n)."""
    if spec in DATASET_SIDES:
        name, split = spec.split("-")
        x, _ = load_dataset(name, data_dir, train=(split == "train"))
        return x[:n]
    path = Path(spec)
    if path.suffix != ".npz" or not path.is_file():
        fail(f"{spec} is neither an existing .npz file nor one of {', '.join(DATASET_SIDES)}")
    try:
        with np.load(path) as data:
            if "images" not in data:
                fail(f"{path} has no 'images' array (it has: {', '.join(data.files)})")
            images = data["images"][:n]
    except (OSError, ValueError) as e:   # not a zip of arrays, or pickled objects
        fail(f"{path} is not a readable .npz of arrays ({type(e).__name__}: {e})")
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        fail(f"{path}: 'images' must be uint8 of shape (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}")
    if len(images) < 2:
        fail(f"{path}: {len(images)} image(s); a Fréchet distance needs at least 2 (a mean and a covariance)")
    return from_uint8(images)


def compute_fid(x_a, x_b, device, weights=None):
    """FID between two image sets, float (N, 1, H, W) tensors in [-1, 1] (Handout A, Problem 4(c)).

    Loads the FID Inception weights (see common/inception_weights.py; a missing file is a one-line error).
    """
    extractor = InceptionFeatures(device, weights)
    return frechet_distance(*extractor.stats(x_a).mean_cov(), *extractor.stats(x_b).mean_cov())


def fid_vs_real(x, dataset, split="test", device="cpu", weights=None, n=10_000, data_dir="data"):
    """FID of generated images x against the first n real images of a split, whose statistics are cached."""
    extractor = InceptionFeatures(device, weights)
    mu_real, sigma_real = real_stats(dataset, split, n, extractor, data_dir)
    return frechet_distance(mu_real, sigma_real, *extractor.stats(x).mean_cov())


def fid_skip_reason(args):
    """Why FID cannot be computed without a download, or None if it can."""
    if args.no_fid:
        return "--no-fid given"
    try:
        if find_weights(args.inception_weights) is None:
            return f"Inception weights {FID_WEIGHTS_FILE} not found: {where_to_put_weights()}"
    except SystemExit:
        if args.inception_weights:   # a path the user named and that does not exist: say so, do not skip
            raise
        return "the Inception weights could not be found"
    return None


def side_inception_stats(spec, x, extractor, data_dir):
    """Inception (mu, sigma) of one side: dataset sides come from (and go to) the real-statistics cache."""
    if spec in DATASET_SIDES:
        name, split = spec.split("-")
        return real_stats(name, split, len(x), extractor, data_dir)
    return extractor.stats(x).mean_cov()


def judge_dataset_for(args):
    if args.judge_dataset:
        return args.judge_dataset
    for spec in (args.real, args.fake):
        if spec in DATASET_SIDES:
            return spec.split("-")[0]
    fail("neither side names a dataset: say which judge to use with --judge-dataset mnist|fashion")


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    # --- data (a side that is neither a file nor a dataset name is an error before the judge is chosen) ---
    x_real, x_fake = load_side(args.real, args.data_dir, args.n), load_side(args.fake, args.data_dir, args.n)
    judge_dataset = judge_dataset_for(args)
    for spec, x in ((args.real, x_real), (args.fake, x_fake)):
        if tuple(x.shape[1:]) != (1, 28, 28):
            fail(f"{spec}: the judges take 28×28 grayscale images, got (C, H, W) = {tuple(x.shape[1:])}")
    print(f"REAL: {args.real} ({len(x_real):,} images)   FAKE: {args.fake} ({len(x_fake):,} images)")
    if min(len(x_real), len(x_fake)) < MIN_UNBIASED:
        print(f"warning: fewer than {MIN_UNBIASED:,} samples on a side: the values below are biased "
              f"upwards and only good for comparisons at the same sample count")
    # --- FID (Inception features) ---
    reason = fid_skip_reason(args)
    if reason:
        print(f"FID: skipped ({reason})")
    else:
        extractor = InceptionFeatures(device, args.inception_weights)
        fid = frechet_distance(*side_inception_stats(args.real, x_real, extractor, args.data_dir),
                               *side_inception_stats(args.fake, x_fake, extractor, args.data_dir))
        print(f"FID: {fid:.3f}")
    # --- FD-judge (judge features; not comparable with FID) ---
    judge = get_judge(judge_dataset, args.data_dir, device)
    start, cpu_start = time.time(), time.process_time()
    fd = judge.fd(x_real, x_fake)
    print(f"FD-judge ({judge_dataset} judge {judge.card['id']}): {fd:.3f}   "
          f"({time.time() - start:.1f}s wall, {time.process_time() - cpu_start:.1f}s CPU on {device})")
    return {"fid": None if reason else fid, "fd_judge": fd, "judge": judge.card,
            "n_real": len(x_real), "n_fake": len(x_fake)}


if __name__ == "__main__":
    with interruptible("finished real-data statistics stay cached in results/fid_stats/; run the command again"):
        main()
