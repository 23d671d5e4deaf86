"""Handout D §1 blocks: shapes per the handout, and each op against the torch layers it wraps."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.blocks import (FC, Conv, ConvBlock, DownBlock, DownConv, Flatten, FCBlock, TimeFCBlock, Unflatten,
                           UpBlock, UpConv)
from common.unets import ConditionalDenoisingUNet, DenoisingUNet, MultiResUNet, TimeConditionedEncoder


@pytest.mark.parametrize("block, x_shape, y_shape", [
    (Conv(1, 8), (2, 1, 28, 28), (2, 8, 28, 28)),
    (DownConv(8, 16), (2, 8, 28, 28), (2, 16, 14, 14)),
    (UpConv(16, 8), (2, 16, 7, 7), (2, 8, 14, 14)),
    (Flatten(7), (2, 16, 7, 7), (2, 16, 1, 1)),
    (Unflatten(16, 7), (2, 16, 1, 1), (2, 16, 7, 7)),
    (Flatten(12), (2, 16, 12, 12), (2, 16, 1, 1)),
    (Unflatten(16, 12), (2, 16, 1, 1), (2, 16, 12, 12)),
    (ConvBlock(3, 8), (2, 3, 48, 48), (2, 8, 48, 48)),
    (DownBlock(8, 16), (2, 8, 14, 14), (2, 16, 7, 7)),
    (UpBlock(16, 8), (2, 16, 14, 14), (2, 8, 28, 28)),
    (FC(5, 7), (2, 5), (2, 7)),
    (FCBlock(1, 32), (2, 1), (2, 32)),
])
def test_block_shapes(block, x_shape, y_shape):
    assert block(torch.randn(x_shape)).shape == y_shape


def _copy_conv_bn(block, conv, bn):
    conv.load_state_dict(block.net[0].state_dict())
    bn.load_state_dict(block.net[1].state_dict())


@pytest.mark.parametrize("cls, torch_conv", [
    (Conv, lambda i, o: nn.Conv2d(i, o, 3, 1, 1)),
    (DownConv, lambda i, o: nn.Conv2d(i, o, 3, 2, 1)),
    (UpConv, lambda i, o: nn.ConvTranspose2d(i, o, 4, 2, 1)),
])
def test_conv_ops_equal_torch_layers(cls, torch_conv):
    torch.manual_seed(0)
    block, conv, bn = cls(3, 5), torch_conv(3, 5), nn.BatchNorm2d(5)
    _copy_conv_bn(block, conv, bn)
    x = torch.randn(4, 3, 14, 14)
    torch.testing.assert_close(block(x), F.gelu(bn(conv(x))))


def test_fc_equals_linear_gelu_and_fcblock_adds_linear():
    torch.manual_seed(0)
    fc, lin = FC(4, 6), nn.Linear(4, 6)
    lin.load_state_dict(fc.net[0].state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(fc(x), F.gelu(lin(x)))
    block = FCBlock(4, 6)
    torch.testing.assert_close(block(x), block.net[1](F.gelu(block.net[0].net[0](x))))


def test_flatten_is_global_average_then_gelu():
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(Flatten(7)(x), F.gelu(x.mean(dim=(2, 3), keepdim=True)))


@pytest.mark.parametrize("size, channels", [(28, 1), (48, 3), (32, 3)])
def test_unets_keep_the_image_shape(size, channels):
    x, t = torch.randn(2, channels, size, size), torch.rand(2)
    assert DenoisingUNet(channels, hidden=8, image_size=size)(x, t).shape == x.shape
    c = F.one_hot(torch.tensor([3, 7]), 10)
    assert ConditionalDenoisingUNet(channels, 8, size)(x, t, c, torch.ones(2)).shape == x.shape
    assert TimeConditionedEncoder(channels, 8, size, out_features=10)(x, t).shape == (2, 10)


def test_unet_rejects_size_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        DenoisingUNet(image_size=30)


def test_conditional_unet_mask_drops_the_label_and_the_label_matters():
    torch.manual_seed(0)
    model = ConditionalDenoisingUNet(hidden=8).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    c3, c7 = F.one_hot(torch.tensor([3, 3]), 10), F.one_hot(torch.tensor([7, 7]), 10)
    dropped = model(x, t, c3, torch.zeros(2))
    torch.testing.assert_close(dropped, model(x, t, torch.zeros(2, 10), torch.ones(2)))
    torch.testing.assert_close(dropped, model(x, t, c7, torch.zeros(2)))
    model.train()   # at initialisation, eval-mode BatchNorm makes the label's effect tiny
    assert not torch.allclose(model(x, t, c3, torch.ones(2)), model(x, t, c7, torch.ones(2)), atol=1e-3)


def test_unet_time_input_matters():
    torch.manual_seed(0)
    model = DenoisingUNet(hidden=8).eval()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(model(x, torch.full((2,), 0.1)), model(x, torch.full((2,), 0.9)))


def test_two_level_blocks_compose_the_ops():
    # ConvBlock = Conv, Conv; DownBlock = DownConv, ConvBlock; UpBlock = UpConv, ConvBlock (Handout D §1)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 14, 14)
    block = ConvBlock(4, 6)
    conv1, bn1, conv2, bn2 = nn.Conv2d(4, 6, 3, 1, 1), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3, 1, 1), nn.BatchNorm2d(6)
    _copy_conv_bn(block.net[0], conv1, bn1)
    _copy_conv_bn(block.net[1], conv2, bn2)
    torch.testing.assert_close(block(x), F.gelu(bn2(conv2(F.gelu(bn1(conv1(x)))))))   # Conv, then Conv
    assert [type(m) for m in block.net] == [Conv, Conv]
    assert [type(m) for m in DownBlock(4, 6).net] == [DownConv, ConvBlock]
    assert [type(m) for m in UpBlock(4, 6).net] == [UpConv, ConvBlock]
    down = DownBlock(4, 6)
    torch.testing.assert_close(down(x), down.net[1].net[1](down.net[1].net[0](down.net[0](x))))


def _capture(module, store, key, inputs=False):
    """A forward hook that keeps module's input (first argument) or output under store[key]."""
    if inputs:
        return module.register_forward_pre_hook(lambda m, args: store.__setitem__(key, args[0]))
    return module.register_forward_hook(lambda m, args, out: store.__setitem__(key, out))


def test_conditional_unet_follows_handout_d_3_1_update_rules():
    # unflatten = c1 * unflatten + t1, then up1 = c2 * up1 + t2: c multiplies, t adds
    torch.manual_seed(0)
    model = ConditionalDenoisingUNet(hidden=8).train()
    seen = {}
    hooks = [_capture(model.fc1_c, seen, "c1"), _capture(model.fc1_t, seen, "t1"),
             _capture(model.fc2_c, seen, "c2"), _capture(model.fc2_t, seen, "t2"),
             _capture(model.unflatten, seen, "U"), _capture(model.up1, seen, "up1_in", inputs=True),
             _capture(model.up1, seen, "O"), _capture(model.up2, seen, "up2_in", inputs=True)]
    x, t, c = torch.randn(3, 1, 28, 28), torch.rand(3), F.one_hot(torch.tensor([1, 5, 9]), 10)
    model(x, t, c, torch.ones(3))
    for h in hooks:
        h.remove()
    c1, t1, c2, t2 = (seen[k][:, :, None, None] for k in ("c1", "t1", "c2", "t2"))
    D2 = seen["U"].shape[1]
    torch.testing.assert_close(seen["up1_in"][:, :D2], c1 * seen["U"] + t1)
    torch.testing.assert_close(seen["up2_in"][:, :seen["O"].shape[1]], c2 * seen["O"] + t2)


def test_unflatten_equals_conv_transpose_batchnorm_gelu():
    # Handout D §1: Unflatten is a (transposed) conv layer 1×1 -> S×S; like every op but FC and Flatten,
    # it is followed by BatchNorm and GELU (common/blocks.py)
    torch.manual_seed(0)
    block, conv, bn = Unflatten(6, 7), nn.ConvTranspose2d(6, 6, 7, stride=7), nn.BatchNorm2d(6)
    _copy_conv_bn(block, conv, bn)
    x = torch.randn(4, 6, 1, 1)
    torch.testing.assert_close(block(x), F.gelu(bn(conv(x))))


def test_unet_skip_connections_concatenate_the_matching_down_path_outputs():
    # Handout D Figure 1: each up stage sees [its input, the down-path output at its resolution] along channels:
    # up1 <- [unflatten, down2], up2 <- [up1, down1], conv_out <- [up2, conv_in]
    torch.manual_seed(0)
    model = DenoisingUNet(hidden=8).train()
    seen = {}
    hooks = [_capture(model.conv_in, seen, "h"), _capture(model.down1, seen, "d1"), _capture(model.down2, seen, "d2"),
             _capture(model.up1, seen, "u1"), _capture(model.up2, seen, "u2"),
             _capture(model.up1, seen, "up1_in", inputs=True), _capture(model.up2, seen, "up2_in", inputs=True),
             _capture(model.conv_out, seen, "out_in", inputs=True)]
    model(torch.randn(2, 1, 28, 28), torch.rand(2))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen["up1_in"][:, -seen["d2"].shape[1]:], seen["d2"])
    torch.testing.assert_close(seen["up2_in"][:, -seen["d1"].shape[1]:], seen["d1"])
    torch.testing.assert_close(seen["out_in"], torch.cat([seen["u2"], seen["h"]], dim=1))


def test_time_conditioned_encoder_time_input_matters():
    # the noisy classifier p_φ(y | x_t, t) and the age regressor f(z_t, t) must see t (Handout A 2(b), C 3)
    torch.manual_seed(0)
    model = TimeConditionedEncoder(hidden=8, out_features=10).eval()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(model(x, torch.full((2,), 0.1)), model(x, torch.full((2,), 0.9)))


def _bf16(fn, *args):
    """fn(*args) under bf16 autocast, as the CUDA path runs it (CPU autocast rounds the same way)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(*args)


def test_time_fcblock_keeps_t_over_T_in_float32_under_autocast():
    torch.manual_seed(0)
    block = TimeFCBlock(16)
    t_frac = torch.arange(1, 1001) / 1000
    assert torch.equal(_bf16(block, t_frac), block(t_frac))     # the same numbers as without autocast
    # what it avoids: a plain FCBlock under bf16 autocast rounds t/T, so about half of T = 1000 timesteps collide
    assert len(torch.unique(_bf16(FCBlock(1, 16), t_frac[:, None]), dim=0)) < 600


@pytest.mark.parametrize("model, cond", [
    (DenoisingUNet(hidden=8), ()),
    (ConditionalDenoisingUNet(hidden=8), (torch.eye(10)[[3, 3]],)),
    (MultiResUNet(in_channels=1, dim=8, dim_mults=(1, 2)), ()),
])
def test_networks_tell_neighbouring_timesteps_apart_under_bf16_autocast(model, cond):
    """T = 1000: t = 997 and 998 round to one bf16 value; the networks must still see two timesteps."""
    model.eval()
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    out = _bf16(model, x, torch.tensor([0.997, 0.998]), *cond)
    assert not torch.equal(out[0], out[1])
