"""Where the FID Inception weights come from (common/inception.py builds the network that uses them).

The file is pytorch-fid's port of the 2015-12-05 TensorFlow Inception graph. It is looked up in order:
an explicit path (--inception-weights), $FID_INCEPTION_WEIGHTS, the torch hub cache, then one download
attempt. A missing file is a one-line error that says where to put it.
"""
import os
from pathlib import Path

import torch

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
