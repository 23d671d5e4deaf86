"""The FID Inception v3 (2048-d pool3 features) and cached feature statistics of real data.

Handout A, Problem 4(c) asks for the FID between 10,000 generated and 10,000 real test images.
"FID" means one particular network: the TensorFlow Inception graph of 2015-12-05, ported to
PyTorch by pytorch-fid (https://github.com/mseitzer/pytorch-fid) as the weights file
pt_inception-2015-12-05-6726825d.pth. It is torchvision's Inception3 with 1008 classes and
no aux head, plus the TF graph's pooling quirks:
  - the pool branch of Mixed_5b-5d, 6b-6e and 7b averages over real pixels only
    (count_include_pad=False: TF does not count the zero padding),
  - Mixed_7c's pool branch is a 3x3 *max* pool.
Inputs as in pytorch-fid: grayscale repeated to 3 channels, bilinear resize to 299 x 299
(align_corners=False, no antialias), values in [-1, 1]. Or, with resize="clean-fid", as clean-fid
(Parmar et al. 2022, https://arxiv.org/abs/2104.11222), which Handout E §7 uses: 8-bit images, each
channel resized as PIL's bicubic does (on 32 x 32 white noise, more than 5 of 255 grey levels from bilinear on
average), grey level v fed as (v - 128) / 128. clean-fid runs NVIDIA's export of the same 2015-12-05
graph; here it is pytorch-fid's port.

The weights file is looked up in order: --inception-weights, $FID_INCEPTION_WEIGHTS, torch's hub cache
(where `python -m tools.fetch_inception_weights` puts it), then one download attempt. Each image costs
11.4 GFLOP, so the real data's statistics are cached in results/fid_stats/.
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.inception import (BasicConv2d, Inception3, InceptionA, InceptionAux,
                                          InceptionB, InceptionC, InceptionD, InceptionE)

from .data import load_mnist
from .frechet import FeatureStats, frechet_distance
from .run import Progress, fail, memory_format, save_npz, to_device

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE


def tf_avg_pool(x):
    """3x3 average pool, stride 1, that divides by the number of real (unpadded) pixels, like TF."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(InceptionA):
    """torchvision's InceptionA with TF's average pool in the pool branch."""

    def forward(self, x):
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(InceptionC):
    """torchvision's InceptionC with TF's average pool in the pool branch."""

    def forward(self, x):
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        branch_pool = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class FIDInceptionE(InceptionE):
    """torchvision's InceptionE with TF's average pool, or a 3x3 max pool when `max_pool` (Mixed_7c)."""

    max_pool = False

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(Inception3):
    """Inception3 laid out exactly like the FID weights file; forward returns pool3 features."""

    def __init__(self):
        # torchvision's block list slots: conv, A, B, C, D, E, aux (aux is not built: aux_logits=False)
        blocks = [BasicConv2d, FIDInceptionA, InceptionB, FIDInceptionC, InceptionD, FIDInceptionE, InceptionAux]
        super().__init__(num_classes=1008, aux_logits=False, init_weights=False, inception_blocks=blocks)
        self.Mixed_7c.max_pool = True  # the ported TF graph max-pools in its last block

    def forward(self, x):
        """(N, 3, 299, 299) in [-1, 1] -> (N, 2048); the 1008-way fc layer is never used."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x))))  # (N, 192, 35, 35)
        x = self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 2048, 8, 8)
        return torch.flatten(self.avgpool(x), 1)  # (N, 2048)


RESIZES = ("pytorch-fid", "clean-fid")


def to_inception_input(x, resize="pytorch-fid"):
    """(N, 1 or 3, H, W) in [-1, 1] -> (N, 3, 299, 299), resized as `resize` does (one of RESIZES).

    pytorch-fid: bilinear, align_corners=False, no antialias. It resizes [0, 1] images, then maps them
    to [-1, 1]; bilinear weights sum to 1, so resizing the [-1, 1] images directly gives the same tensor.
    """
    if resize == "clean-fid":
        x = clean_fid_resize(x)
    else:
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=False)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def clean_fid_resize(x):
    """clean-fid's "clean" mode, (N, C, H, W) in [-1, 1] -> (N, C, 299, 299):
    1. round to 8-bit grey levels v (assumed: Handout E does not show its call; image files hold 8 bits,
       while clean-fid given a generator function does not round);
    2. resize each channel by PIL's bicubic filter on floats, clip to 0..255. torch's antialiased bicubic is
       PIL's filter (a = -0.5): equal within 5e-4 of a grey level at 32 x 32 and within 1e-2 at 28, 64 and
       300 (tests/test_inception.py);
    3. feed (v - 128) / 128, clean-fid's input scaling (pytorch-fid's is v / 127.5 - 1)."""
    levels = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
    levels = F.interpolate(levels, size=(299, 299), mode="bicubic", align_corners=False, antialias=True)
    return (levels.clamp(0, 255) - 128) / 128


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


def load_fid_inception(path=None, device="cpu"):
    """FIDInceptionV3 with the FID weights, in eval mode on `device` (fp32)."""
    with torch.random.fork_rng(devices=[]):   # its throwaway initial weights draw nothing from a run's stream
        net = FIDInceptionV3()
    # BatchNorm's num_batches_tracked counters are unused in eval mode and absent from old files
    state = {k: v for k, v in read_weights(path).items() if not k.endswith("num_batches_tracked")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        fail(f"the FID Inception weights do not fit the network: {str(e).splitlines()[-1].strip()}")
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        fail(f"the FID Inception weights do not fit the network (missing {missing[:3]}, "
             f"unexpected {unexpected[:3]}): is it {FID_WEIGHTS_FILE}?")
    return to_device(net, torch.device(device)).eval().requires_grad_(False)


class InceptionFeatures:
    """Images in [-1, 1], (N, C, H, W) on any device -> FID Inception features, in fp32 batches on `device`."""

    def __init__(self, device="cpu", weights=None, resize="pytorch-fid", net=None):
        assert resize in RESIZES, f"resize must be one of {RESIZES}, got {resize!r}"
        self.device, self.resize = torch.device(device), resize
        self.net = net if net is not None else load_fid_inception(weights, self.device)
        self.batch_size = 200 if self.device.type == "cuda" else 16   # small batches run faster on a CPU

    @torch.no_grad()
    def stats(self, x):
        """FeatureStats of x's features, accumulated batch by batch (never all features in memory at once)."""
        stats, batches = FeatureStats(), x.split(self.batch_size)
        progress = Progress(len(batches), "inception features", check=5)
        for xb in batches:
            xb = to_inception_input(xb.to(self.device), self.resize)
            stats.update(self.net(xb.contiguous(memory_format=memory_format(self.device))).float())
            progress.step(len(xb))
        return stats


def real_stats(dataset, split, n, extractor, data_dir="data", cache_dir="results/fid_stats"):
    """(mu, sigma) of the FID features of the first n images of 'mnist'/'fashion' 'train'/'test', cached in
    <cache_dir>/inception-<dataset>-<split>-<n>.npz: computed once, then read."""
    path = Path(cache_dir) / f"inception-{dataset}-{split}-{n}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                return torch.from_numpy(cached["mu"]), torch.from_numpy(cached["sigma"])
        except Exception as e:   # truncated or not an .npz: numpy and zipfile raise many types
            print(f"note: {path} is damaged ({type(e).__name__}): computed again", flush=True)
    x, _ = load_mnist(dataset, data_dir, train=(split == "train"))
    if n > len(x):
        fail(f"{dataset}-{split} has {len(x)} images, fewer than the {n} samples to compare with: pass fewer")
    print(f"computing the Inception statistics of {n} {dataset}-{split} images (cached in {path})", flush=True)
    mu, sigma = extractor.stats(x[:n]).mean_cov()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, mu=mu.numpy(), sigma=sigma.numpy())
    return mu, sigma


def fid(x, dataset, extractor, data_dir="data", split="test"):
    """FID of images x against as many real images of the split (Handout A 4(c): 10,000 vs the test set), with an
    InceptionFeatures built before the run (a weights file it cannot read stops the run before it trains)."""
    mu, sigma = real_stats(dataset, split, len(x), extractor, data_dir)
    return frechet_distance(mu, sigma, *extractor.stats(x).mean_cov())
