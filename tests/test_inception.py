"""Tests for common/inception.py on a randomly initialised network: layout of the FID weights file, the TF
pooling patches, input conversion, weight lookup, and the real-statistics cache.
Nothing is downloaded."""
import numpy as np
import pytest
import torch
from torchvision.models.inception import InceptionA

import common.inception as inception
from common.inception import (FID_WEIGHTS_FILE, FIDInceptionA, FIDInceptionV3, InceptionFeatures, find_weights,
                              load_fid_inception, real_stats, to_inception_input)


def conv_table():
    """Every BasicConv2d of the FID Inception (pt_inception-2015-12-05): name -> (out, in, kh, kw)."""
    t = {"Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
         "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3)}
    for name, c_in, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        t.update({f"{name}.branch1x1": (64, c_in, 1, 1), f"{name}.branch5x5_1": (48, c_in, 1, 1),
                  f"{name}.branch5x5_2": (64, 48, 5, 5), f"{name}.branch3x3dbl_1": (64, c_in, 1, 1),
                  f"{name}.branch3x3dbl_2": (96, 64, 3, 3), f"{name}.branch3x3dbl_3": (96, 96, 3, 3),
                  f"{name}.branch_pool": (pool, c_in, 1, 1)})
    t.update({"Mixed_6a.branch3x3": (384, 288, 3, 3), "Mixed_6a.branch3x3dbl_1": (64, 288, 1, 1),
              "Mixed_6a.branch3x3dbl_2": (96, 64, 3, 3), "Mixed_6a.branch3x3dbl_3": (96, 96, 3, 3)})
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        t.update({f"{name}.branch1x1": (192, 768, 1, 1), f"{name}.branch7x7_1": (c7, 768, 1, 1),
                  f"{name}.branch7x7_2": (c7, c7, 1, 7), f"{name}.branch7x7_3": (192, c7, 7, 1),
                  f"{name}.branch7x7dbl_1": (c7, 768, 1, 1), f"{name}.branch7x7dbl_2": (c7, c7, 7, 1),
                  f"{name}.branch7x7dbl_3": (c7, c7, 1, 7), f"{name}.branch7x7dbl_4": (c7, c7, 7, 1),
                  f"{name}.branch7x7dbl_5": (192, c7, 1, 7), f"{name}.branch_pool": (192, 768, 1, 1)})
    t.update({"Mixed_7a.branch3x3_1": (192, 768, 1, 1), "Mixed_7a.branch3x3_2": (320, 192, 3, 3),
              "Mixed_7a.branch7x7x3_1": (192, 768, 1, 1), "Mixed_7a.branch7x7x3_2": (192, 192, 1, 7),
              "Mixed_7a.branch7x7x3_3": (192, 192, 7, 1), "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3)})
    for name, c_in in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        t.update({f"{name}.branch1x1": (320, c_in, 1, 1), f"{name}.branch3x3_1": (384, c_in, 1, 1),
                  f"{name}.branch3x3_2a": (384, 384, 1, 3), f"{name}.branch3x3_2b": (384, 384, 3, 1),
                  f"{name}.branch3x3dbl_1": (448, c_in, 1, 1), f"{name}.branch3x3dbl_2": (384, 448, 3, 3),
                  f"{name}.branch3x3dbl_3a": (384, 384, 1, 3), f"{name}.branch3x3dbl_3b": (384, 384, 3, 1),
                  f"{name}.branch_pool": (192, c_in, 1, 1)})
    return t


def expected_weight_shapes():
    shapes = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for name, shape in conv_table().items():
        shapes[f"{name}.conv.weight"] = shape
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{stat}"] = (shape[0],)
    return shapes


def raise_offline(*args, **kwargs):
    """Stands in for a download when there is no network."""
    raise OSError("no network")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_state_dict_matches_fid_weights_file(net):
    expected = expected_weight_shapes()
    # num_batches_tracked counters are BatchNorm bookkeeping, ignored when loading
    got = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(conv_table()) == 94 and len(expected) == 472
    assert got == expected
    assert got["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    # torchvision's inception_v3 has 27,161,264 parameters; minus its aux head (3,326,696), plus 8 classes
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


def test_fid_blocks_patch_only_the_pooling(net):
    assert [type(getattr(net, f"Mixed_{b}")).__name__ for b in ("5b", "6a", "6b", "7a", "7b")] == \
        ["FIDInceptionA", "InceptionB", "FIDInceptionC", "InceptionD", "FIDInceptionE"]
    assert not net.Mixed_7b.max_pool and net.Mixed_7c.max_pool and net.AuxLogits is None
    torch.manual_seed(1)
    ref, fid = InceptionA(8, pool_features=4).eval(), FIDInceptionA(8, pool_features=4).eval()
    fid.load_state_dict(ref.state_dict())
    x = torch.rand(1, 8, 6, 6)
    with torch.no_grad():
        y_ref, y_fid = ref(x), fid(x)
    # branches 1x1, 5x5, 3x3dbl (224 channels) agree; the pool branch agrees away from the border only
    torch.testing.assert_close(y_fid[:, :224], y_ref[:, :224])
    torch.testing.assert_close(y_fid[:, 224:, 1:-1, 1:-1], y_ref[:, 224:, 1:-1, 1:-1])
    assert not torch.allclose(y_fid[:, 224:, 0, 0], y_ref[:, 224:, 0, 0])


def test_to_inception_input():
    x = torch.full((2, 1, 28, 28), 0.25)
    x[1, :, :14] = -1.0
    y = to_inception_input(x)
    assert y.shape == (2, 3, 299, 299)
    torch.testing.assert_close(y[0], torch.full((3, 299, 299), 0.25))  # constants stay constant
    assert torch.equal(y[1, 0], y[1, 2]) and y.min() >= -1 and y.max() <= 0.25


def test_resize_is_bilinear_with_half_pixel_centres():
    # pytorch-fid's resize (align_corners=False): output column i samples input x = (i + 0.5)·28/299 − 0.5,
    # clamped to [0, 27], linearly between its two neighbours; a ramp makes every column count
    ramp = torch.linspace(-1, 1, 28).reshape(1, 1, 1, 28).expand(1, 1, 28, 28)
    got = to_inception_input(ramp)[0, 0, 0].double()
    x = ((torch.arange(299, dtype=torch.float64) + 0.5) * 28 / 299 - 0.5).clamp(0, 27)
    left = x.floor().long()
    right = (left + 1).clamp(max=27)
    values = torch.linspace(-1, 1, 28, dtype=torch.float64)
    expected = values[left] + (x - left) * (values[right] - values[left])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side, grey_levels", [(32, 5e-4), (28, 1e-2), (64, 1e-2), (300, 1e-2)])
def test_clean_fid_resize_is_pils_bicubic_on_8_bit_levels(side, grey_levels):
    """Oracle: clean-fid's own recipe, PIL's BICUBIC resize of each channel as a float ('F') image, clipped,
    for upsampling (28, 32, 64) and downsampling (300) alike."""
    from PIL import Image
    levels = torch.randint(0, 256, (2, 3, side, side), generator=torch.Generator().manual_seed(0)).float()
    x = levels / 127.5 - 1 + 0.003          # off by less than half a grey level: quantised away
    expected = torch.tensor(np.stack([[np.asarray(Image.fromarray(channel.numpy(), mode="F").resize(
        (299, 299), Image.BICUBIC)).clip(0, 255) for channel in image] for image in levels]))
    got = to_inception_input(x, resize="clean-fid")
    # clean-fid's input scaling (v − 128) / 128: one grey level is 1/128
    torch.testing.assert_close(got, (expected - 128) / 128, atol=grey_levels / 128, rtol=0)


def test_clean_fid_and_pytorch_fid_resizes_differ_by_grey_levels_on_white_noise():
    """The worst case for the two resizes (README: compare FIDs only within one kind): more than 5 of 255 grey
    levels apart on average for 32×32 white noise (bilinear output mapped to the same (v − 128) / 128 scale)."""
    levels = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0)).float()
    x = levels / 127.5 - 1
    bilinear = (to_inception_input(x) + 1) * 127.5                  # grey levels again
    clean = to_inception_input(x, resize="clean-fid") * 128 + 128
    assert (bilinear - clean).abs().mean() > 5


def test_random_network_maps_mnist_sized_images_to_2048_features_deterministically(net):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    extractor = InceptionFeatures(net=net)
    extractor.batch_size = 2                                  # two batches: the statistics add up across them
    mu, sigma = extractor.stats(x).mean_cov()
    with torch.no_grad():
        f = net(to_inception_input(x)).double()
    assert mu.shape == (2048,) and torch.isfinite(sigma).all()
    torch.testing.assert_close(mu, f.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sigma, torch.cov(f.T), rtol=1e-3, atol=1e-6)
    with pytest.raises(AssertionError, match="resize must be one of"):
        InceptionFeatures(net=net, resize="bicubic")


def test_weights_load_from_explicit_path(net, tmp_path):
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.pth")
    assert find_weights(tmp_path / "w.pth") == tmp_path / "w.pth"
    with pytest.raises(SystemExit, match="nope.pth: no such file"):      # a named file that is not there
        find_weights(tmp_path / "nope.pth")
    loaded = load_fid_inception(tmp_path / "w.pth")
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(SystemExit, match="do not fit"):
        load_fid_inception(tmp_path / "bad.pth")


def test_missing_weights_offline_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", raise_offline)
    assert find_weights() is None
    with pytest.raises(SystemExit) as e:
        load_fid_inception()
    message = str(e.value)
    assert "\n" not in message and FID_WEIGHTS_FILE in message and str(tmp_path) in message
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(SystemExit, match="FID_INCEPTION_WEIGHTS"):
        load_fid_inception()


class FlatFeatures:
    """A stand-in extractor: pixels as features, counting how often it is asked."""
    calls = 0

    def stats(self, x):
        from common.frechet import FeatureStats
        self.calls += 1
        return FeatureStats().update(x.reshape(len(x), -1)[:, :20])


def test_real_stats_are_cached_and_a_damaged_cache_is_computed_again(tmp_path, monkeypatch, capsys):
    from common.data import synthetic_mnist
    monkeypatch.setattr(inception, "load_mnist", lambda name, data_dir, train: synthetic_mnist(64))
    extractor, cached = FlatFeatures(), tmp_path / "inception-mnist-test-50.npz"
    mu, sigma = real_stats("mnist", "test", 50, extractor, cache_dir=tmp_path)
    mu2, sigma2 = real_stats("mnist", "test", 50, extractor, cache_dir=tmp_path)
    assert extractor.calls == 1 and cached.is_file()
    np.testing.assert_array_equal(mu.numpy(), mu2.numpy())
    np.testing.assert_array_equal(sigma.numpy(), sigma2.numpy())
    cached.write_bytes(cached.read_bytes()[:300])                  # cut short
    mu3, _ = real_stats("mnist", "test", 50, extractor, cache_dir=tmp_path)
    assert extractor.calls == 2 and f"note: {cached} is damaged (BadZipFile): computed again" in capsys.readouterr().out
    np.testing.assert_array_equal(mu.numpy(), mu3.numpy())
    with pytest.raises(SystemExit, match="has 64 images"):
        real_stats("mnist", "test", 100, extractor, cache_dir=tmp_path)
