"""Where the FID Inception weights come from (common/inception.py builds the network that uses them).

The file is pytorch-fid's port of the 2015-12-05 TensorFlow Inception graph. It is looked up in order:
an explicit path (--inception-weights), $FID_INCEPTION_WEIGHTS, the torch hub cache, then one download
attempt. A missing file is a one-line error that says where to put it.

Command:  python -m common.inception_weights
          fetches the file once into the torch hub cache (one download), checks that it loads,
          and prints where it is; 04, 05, 07 and common.fid then compute FID without downloading.
"""
import argparse
import os
from pathlib import Path

import torch

from .files import atomic_save
from .utils import fail

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE


def hub_weights_path():
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def where_to_put_weights():
    return (f"download {FID_WEIGHTS_URL} and put it at {hub_weights_path()}, "
            f"or pass --inception-weights PATH, or set FID_INCEPTION_WEIGHTS")


def find_weights(path=None):
    """The first of: `path`, $FID_INCEPTION_WEIGHTS, the hub cache file; None when none is given or there.

    A path that is named explicitly but missing is an error.
    """
    for source, named in (("--inception-weights", path),
                          ("FID_INCEPTION_WEIGHTS", os.environ.get("FID_INCEPTION_WEIGHTS"))):
        if named:
            if not Path(named).is_file():
                fail(f"{source} {named}: no such file ({where_to_put_weights()})")
            return Path(named)
    cached = hub_weights_path()
    return cached if cached.is_file() else None


def inception_available(path=None):
    """True if the FID Inception weights can be found without trying a download."""
    try:
        return find_weights(path) is not None
    except SystemExit:
        return False


def read_weights(path=None):
    """The weights file's state dict: from disk if found, else one download attempt into the hub cache."""
    found = find_weights(path)
    if found is None:
        print(f"FID Inception weights not found locally; trying to download {FID_WEIGHTS_URL}", flush=True)
        try:
            return torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", progress=False)
        except Exception as e:  # offline: URLError, HTTPError, OSError, ...
            fail(f"FID Inception weights {FID_WEIGHTS_FILE} are not here and the download failed "
                 f"({type(e).__name__}): {where_to_put_weights()}")
    try:
        return torch.load(found, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        fail(f"{found} is not a readable weights file ({type(e).__name__}): {where_to_put_weights()}")


def fetch_weights():
    """The weights file's path: found on disk, else downloaded once (read_weights) and kept in the hub cache."""
    found = find_weights()
    if found is not None:
        return found
    state = read_weights()  # the one download attempt; offline, a one-line error
    path = hub_weights_path()
    if not path.is_file():  # torch.hub keeps its download there already; save it if it did not
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(state, path)
    return path


def main(argv=None):
    argparse.ArgumentParser(description="Fetch the FID Inception weights once and check that they load.",
                            epilog=f"Looks in $FID_INCEPTION_WEIGHTS and {hub_weights_path()} first.").parse_args(argv)
    path = fetch_weights()
    from .inception import load_fid_inception  # imported here: common/inception.py imports this module
    load_fid_inception(path)
    print(f"FID Inception weights: {path} (they load; FID is computed from now on)")
    return path


if __name__ == "__main__":
    main()
