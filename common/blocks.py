"""Handout D §1: the basic ops and UNet blocks, with the handout's names and shape contracts.

Every op is a layer followed by BatchNorm and GELU, except FC (Linear + GELU) and
Flatten (average pooling + GELU). Shapes below use B = batch, H×W = resolution.
"""
import torch
import torch.nn as nn


class Conv(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): 3×3 conv that keeps the resolution."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1),
                                 nn.BatchNorm2d(out_channels), nn.GELU())

    def forward(self, x):
        return self.net(x)


class DownConv(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/2, W/2): 3×3 conv with stride 2."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                                 nn.BatchNorm2d(out_channels), nn.GELU())

    def forward(self, x):
        return self.net(x)


class UpConv(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W): 4×4 transposed conv with stride 2."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
                                 nn.BatchNorm2d(out_channels), nn.GELU())

    def forward(self, x):
        return self.net(x)


class Flatten(nn.Module):
    """(B, C, S, S) -> (B, C, 1, 1): average pooling over the whole S×S map (S = 7 on MNIST).

    The handout fixes S = 7 (28 / 4); `size` generalises it to other resolutions (48 / 4 = 12).
    """

    def __init__(self, size=7):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(size), nn.GELU())

    def forward(self, x):
        return self.net(x)


class Unflatten(nn.Module):
    """(B, C, 1, 1) -> (B, C, S, S): transposed conv with kernel = stride = S (S = 7 on MNIST)."""

    def __init__(self, channels, size=7):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(channels, channels, size, stride=size),
                                 nn.BatchNorm2d(channels), nn.GELU())

    def forward(self, x):
        return self.net(x)


class FC(nn.Module):
    """(B, F_in) -> (B, F_out): fully connected layer + GELU."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, out_features), nn.GELU())

    def forward(self, x):
        return self.net(x)


class ConvBlock(nn.Module):
    """Two Convs. Same shapes as Conv: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(Conv(in_channels, out_channels), Conv(out_channels, out_channels))

    def forward(self, x):
        return self.net(x)


class DownBlock(nn.Module):
    """DownConv then ConvBlock. Same shapes as DownConv: -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(DownConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))

    def forward(self, x):
        return self.net(x)


class UpBlock(nn.Module):
    """UpConv then ConvBlock. Same shapes as UpConv: -> (B, C_out, 2H, 2W)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.net = nn.Sequential(UpConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))

    def forward(self, x):
        return self.net(x)


class FCBlock(nn.Module):
    """FC followed by a Linear layer: (B, F_in) -> (B, F_out). Embeds a class vector (or t: TimeFCBlock)."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.net = nn.Sequential(FC(in_features, out_features), nn.Linear(out_features, out_features))

    def forward(self, x):
        return self.net(x)


class TimeFCBlock(FCBlock):
    """FCBlock(1, F) of the time input t/T: (B,) -> (B, F), always in float32.

    Under CUDA's bf16 autocast the first Linear would round t/T to 8 significant bits: at T = 1000 only
    about 500 of the 1,000 timesteps would stay distinct (t = 997 and 998 get one input), at T = 300 about
    280. So this block leaves autocast; it is (B, 1) -> (B, F), a negligible cost. A bf16 feature map plus
    this float32 embedding is float32 (type promotion) until the next convolution casts it back to bf16."""

    def __init__(self, out_features):
        super().__init__(1, out_features)

    def forward(self, t_frac):
        with torch.autocast(t_frac.device.type, enabled=False):
            return super().forward(t_frac.reshape(-1, 1).float())
