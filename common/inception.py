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

Where the weights file is looked up: common/inception_weights.py. Cost: 5.7 G multiply-adds (11.4 GFLOP) per image, so
10,000 images take about 20 minutes on a 2-core CPU (8 images/s, BENCHMARKS.md) and seconds on a GPU;
real-data statistics are therefore cached in results/fid_stats/.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.inception import (BasicConv2d, Inception3, InceptionA, InceptionAux,
                                          InceptionB, InceptionC, InceptionD, InceptionE)

from .data import load_dataset
from .files import save_npz
from .frechet import FeatureStats
from .inception_weights import FID_WEIGHTS_FILE, read_weights
from .parts import load_part, save_part, state_hash, tensor_hash
from .utils import Progress, fail, memory_format, to_device


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


def load_fid_inception(path=None, device="cpu"):
    """FIDInceptionV3 with the FID weights, in eval mode on `device` (fp32)."""
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
    """Images in [-1, 1], (N, 1, H, W) on any device -> FID Inception features, in fp32 batches on `device`."""

    def __init__(self, device="cpu", weights=None, batch_size=None, net=None, quiet=False, resize="pytorch-fid"):
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        self.device, self.quiet, self.resize = torch.device(device), quiet, resize
        self.name = "inception" if resize == "pytorch-fid" else f"inception-{resize}"   # real_stats' cache names
        self.net = net if net is not None else load_fid_inception(weights, self.device)
        # on CPU small batches run faster (16: 1.1-1.2x the images/s of 50, BENCHMARKS.md)
        self.batch_size = batch_size or (200 if self.device.type == "cuda" else 16)

    @torch.no_grad()
    def batch_features(self, x):
        """Yield (B, 2048) float32 features batch by batch, with a progress line on CPU."""
        total = -(-len(x) // self.batch_size)
        show = self.device.type == "cpu" and not self.quiet                  # a GPU is done in seconds
        progress = Progress(total, prefix="inception features") if show else None
        for step, start in enumerate(range(0, len(x), self.batch_size), 1):
            xb = to_inception_input(x[start:start + self.batch_size].to(self.device), self.resize)
            yield self.net(xb.contiguous(memory_format=memory_format(self.device))).float()
            if progress is not None:
                progress.update(step, len(xb))

    def __call__(self, x):
        """(N, 2048) float32 features on the CPU."""
        return torch.cat([f.cpu() for f in self.batch_features(x)])

    def stats(self, x):
        """FeatureStats of x's features, accumulated batch by batch (features never all in memory)."""
        stats = FeatureStats()
        for f in self.batch_features(x):
            stats.update(f)
        return stats


def cached_stats(extractor, x, path):
    """(mu, sigma) of `extractor` features of the images x, saved at `path` under a key of the images, the
    network's weights, the resize and the device: a rerun (or --resume) reads them instead of recomputing."""
    key = [tensor_hash(x), extractor.name, state_hash(extractor.net), extractor.device.type]
    saved = load_part(path, key)
    if saved is None:
        saved = save_part(path, key, list(extractor.stats(x).mean_cov()))
    return tuple(saved)


def real_stats(dataset, split, n, extractor, data_dir="data", cache_dir="results/fid_stats"):
    """(mu, sigma) of `extractor` features of the first n images of 'mnist'/'fashion' 'train'/'test'.

    Cached in <cache_dir>/<extractor.name>-<dataset>-<split>-<n>.npz: computed once, then read.
    """
    path = Path(cache_dir) / f"{extractor.name}-{dataset}-{split}-{n}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return torch.from_numpy(cached["mu"]), torch.from_numpy(cached["sigma"])
    x, _ = load_dataset(dataset, data_dir, train=(split == "train"))
    if n > len(x):
        fail(f"{dataset}-{split} has only {len(x)} images, {n} asked for")
    print(f"computing {extractor.name} statistics of {n} {dataset}-{split} images (cached in {path})")
    mu, sigma = extractor.stats(x[:n]).mean_cov()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, mu=mu.numpy(), sigma=sigma.numpy())  # atomically: never half a cache file
    return mu, sigma
