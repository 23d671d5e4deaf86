"""Handout E §7: a multi-resolution denoising UNet, built from Handout D's blocks (common/blocks.py).

The handout's starter UNet is configured by `unet_dim` (width of the first level, 16) and
`unet_dim_mults` ([1, 2, 4, 8]): level i has unet_dim · dim_mults[i] channels, and every
level after the first halves the resolution. With the defaults on 32×32 images:

    level 0: (B, 16, 32, 32)   level 1: (B, 32, 16, 16)   level 2: (B, 64, 8, 8)   level 3: (B, 128, 4, 4)

The encoder goes down the levels with DownBlocks, a ConvBlock works at the lowest level, and
the decoder comes back up with UpBlocks, each fed the concatenation of the previous decoder
output and the encoder output of the same resolution (the skip connection, Handout E Fig. 2).
The time input is t/T (as in Handout D): one FCBlock per level embeds it, and the embedding
is added to that level's feature map on the way down and on the way up.
This is a deliberately plain UNet (no ResNet blocks or attention, unlike the starter code).
"""
import torch
import torch.nn as nn

from .blocks import ConvBlock, DownBlock, TimeFCBlock, UpBlock


class MultiResUNet(nn.Module):
    """eps_theta(x_t, t) at len(dim_mults) resolutions; the image side must divide by 2^(levels − 1)."""

    def __init__(self, in_channels=3, dim=16, dim_mults=(1, 2, 4, 8)):
        super().__init__()
        if not dim_mults:
            raise ValueError("dim_mults needs at least one multiplier")
        widths = [dim * m for m in dim_mults]     # channels per level, e.g. [16, 32, 64, 128]
        self.levels = len(widths)
        self.conv_in = ConvBlock(in_channels, widths[0])
        # encoder: level i -> level i+1 halves H and W
        self.downs = nn.ModuleList(DownBlock(widths[i], widths[i + 1]) for i in range(self.levels - 1))
        self.mid = ConvBlock(widths[-1], widths[-1])
        # decoder: concat(decoder level i+1, skip of level i+1) -> level i, doubling H and W
        self.ups = nn.ModuleList(UpBlock(2 * widths[i + 1], widths[i]) for i in range(self.levels - 1))
        self.conv_out = ConvBlock(2 * widths[0], widths[0])
        self.final = nn.Conv2d(widths[0], in_channels, 3, padding=1)
        # time t/T -> one embedding per level and side (added to the feature map of that level)
        self.time_down = nn.ModuleList(TimeFCBlock(w) for w in widths)
        self.time_up = nn.ModuleList(TimeFCBlock(w) for w in widths)

    def check_size(self, height, width):
        factor = 2 ** (self.levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"image size {height}×{width} is not divisible by 2^(levels − 1) = {factor}")

    def forward(self, x, t_frac):
        """x: (B, C, H, W) noisy images; t_frac: (B,) timesteps t already divided by T. Returns (B, C, H, W)."""
        self.check_size(*x.shape[-2:])
        emb_down = [fc(t_frac)[:, :, None, None] for fc in self.time_down]      # level i: (B, w_i, 1, 1)
        emb_up = [fc(t_frac)[:, :, None, None] for fc in self.time_up]
        # encoder, keeping every level's output for the skip connections
        h = self.conv_in(x) + emb_down[0]             # (B, w_0, H, W)
        skips = [h]
        for i, down in enumerate(self.downs, start=1):
            h = down(h) + emb_down[i]                 # (B, w_i, H / 2^i, W / 2^i)
            skips.append(h)
        # lowest resolution
        h = self.mid(h) + emb_up[-1]                  # (B, w_L, H / 2^L, W / 2^L), L = levels − 1
        # decoder: level i+1 -> level i, with the skip of level i+1
        for i in reversed(range(self.levels - 1)):
            h = self.ups[i](torch.cat([h, skips[i + 1]], dim=1)) + emb_up[i]   # (B, w_i, H / 2^i, W / 2^i)
        h = self.conv_out(torch.cat([h, skips[0]], dim=1))                   # (B, w_0, H, W)
        return self.final(h)                                                # (B, C, H, W)
