"""FID and FD-judge between two image sets (Handout A, Problem 4(c): 10,000 samples against the test set).

    python -m tools.fid mnist-test results/01_ddpm_mnist/samples.npz   # --no-fid: FD-judge only, seconds on a CPU

Each side: an .npz of the scripts (uint8 'images', N × 28 × 28) or a dataset, e.g. fashion-train; at most --n
images a side. FID runs the FID Inception (common/inception.py): seconds on a GPU, about 8 images/s on a CPU (a
dataset side's statistics are cached in results/fid_stats/). FD-judge: the same Fréchet distance over our judge's
features (common/judge.py), on another scale: never compare it with an FID.
"""
import zipfile
from pathlib import Path

import numpy as np

from common.cli import make_parser, positive_int
from common.data import from_uint8, load_mnist
from common.frechet import MIN_UNBIASED, frechet_distance
from common.inception import InceptionFeatures, find_weights, real_stats, where_to_put_weights
from common.judge import get_judge
from common.run import fail, pick_device

DATASET_SIDES = [f"{name}-{split}" for name in ("mnist", "fashion") for split in ("test", "train")]


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("real", help=f"an .npz with uint8 'images' (N × 28 × 28), or one of {', '.join(DATASET_SIDES)}")
    p.add_argument("fake", help="the same choices as REAL")
    p.add_argument("--inception-weights", help="default: $FID_INCEPTION_WEIGHTS, else torch's hub cache")
    p.add_argument("--judge-dataset", choices=["mnist", "fashion"], help="default: the dataset named on either side")
    p.add_argument("--n", type=positive_int, default=10_000, help="at most this many images a side")
    p.add_argument("--no-fid", action="store_true", help="skip FID even if the Inception weights are here")
    p.add_argument("--data-dir", default="data", help="torchvision dataset root")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return p.parse_args(argv)


def load_side(spec, data_dir, n):
    """A dataset name or an .npz of uint8 images -> its first n images, float (N, 1, 28, 28) in [-1, 1]."""
    if spec in DATASET_SIDES:
        return load_mnist(spec.split("-")[0], data_dir, train=spec.endswith("-train"))[0][:n]
    if Path(spec).suffix != ".npz":
        fail(f"{spec} is neither an .npz file nor one of {', '.join(DATASET_SIDES)}")
    if not Path(spec).is_file():
        fail(f"{spec} does not exist (an .npz that the scripts write, e.g. results/01_ddpm_mnist/samples.npz)")
    try:
        with np.load(spec) as data:
            images = data["images"][:n] if "images" in data else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:   # not a zip of arrays, truncated, pickled
        fail(f"{spec} is damaged or not an .npz of arrays ({type(e).__name__}): write it again, or pass another file")
    if images is None or images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(images) < 2:
        fail(f"{spec}: need 'images', at least 2 uint8 images of 28 × 28 (grey), got " +
             ("none" if images is None else f"{images.dtype} {images.shape}"))
    return from_uint8(images)


def side_stats(spec, x, extractor, data_dir):
    """Inception (mu, sigma) of one side; a dataset side's come from (and go to) the real-statistics cache."""
    if spec in DATASET_SIDES:
        return real_stats(*spec.split("-"), len(x), extractor, data_dir)   # (dataset, split, n, ...)
    return extractor.stats(x).mean_cov()


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    # --- the two sides (a bad file stops here, before any network is loaded) ---
    x_real, x_fake = load_side(args.real, args.data_dir, args.n), load_side(args.fake, args.data_dir, args.n)
    named = [spec.split("-")[0] for spec in (args.real, args.fake) if spec in DATASET_SIDES]
    if not (args.judge_dataset or named):
        fail("neither side names a dataset: say whose judge to use with --judge-dataset mnist|fashion")
    print(f"REAL: {args.real} ({len(x_real):,} images)   FAKE: {args.fake} ({len(x_fake):,} images)")
    if min(len(x_real), len(x_fake)) < MIN_UNBIASED:
        print(f"warning: under {MIN_UNBIASED:,} images a side, both are biased upwards: compare at equal counts")
    # --- FID (FID Inception features) ---
    weights = None if args.no_fid else find_weights(args.inception_weights)   # a named file that is missing: error
    fid = None
    if weights is None:
        print("FID: skipped (" + ("--no-fid" if args.no_fid else where_to_put_weights()) + ")")
    else:
        extractor = InceptionFeatures(device, weights)
        fid = frechet_distance(*side_stats(args.real, x_real, extractor, args.data_dir),
                               *side_stats(args.fake, x_fake, extractor, args.data_dir))
        print(f"FID: {fid:.3f}")
    # --- FD-judge (judge features; not comparable with FID) ---
    judge = get_judge(args.judge_dataset or named[0], args.data_dir, device)
    fd = judge.fd(x_real, x_fake)
    print(f"FD-judge ({judge.dataset} judge): {fd:.3f}")
    return {"fid": fid, "fd_judge": fd, "judge": judge.card, "n_real": len(x_real), "n_fake": len(x_fake)}


if __name__ == "__main__":
    main()
