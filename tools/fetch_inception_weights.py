"""Fetch the FID Inception weights once into torch's hub cache, check that they load, and print where they are.

    python -m tools.fetch_inception_weights     # one download (95 MB); nothing to do if they are already here

common/inception.py looks in --inception-weights, $FID_INCEPTION_WEIGHTS, then the hub cache: from then on 04,
05, 07 and tools.fid compute FID without a download.
"""
from common.cli import make_parser
from common.inception import find_weights, hub_weights_path, load_fid_inception, read_weights
from common.run import fail


def main(argv=None):
    make_parser(__doc__).parse_args(argv)
    path = find_weights()                  # $FID_INCEPTION_WEIGHTS, else the hub cache; None if neither
    if path is None:
        read_weights()                     # one download attempt into the hub cache; offline, a one-line error
        path = hub_weights_path()
        if not path.is_file():
            fail(f"the download did not leave {path}: download it by hand and put it there")
    load_fid_inception(path)               # a damaged or foreign file is a one-line error
    print(f"FID Inception weights: {path} (they load)")
    return path


if __name__ == "__main__":
    main()
