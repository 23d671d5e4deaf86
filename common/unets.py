"""The denoisers: Handout D §2.1's UNet, its class-conditioned version (§3.1), its down half (the guides of
Handout A 2(b) and C 3 are built on it), and Handout E's multi-resolution UNet.

The time input is t/T (a float in (0, 1], shape (B,)), fed to the FCBlocks: the handout writes
ε_θ(x_t, t) and leaves the encoding open; the normalised timestep keeps the FCBlocks' inputs O(1).
Resolution: the handout's 28×28 gives a 7×7 bottleneck; any size divisible by 4 works (48×48 -> 12×12),
since Flatten/Unflatten follow `image_size`.
"""
import torch
import torch.nn as nn

from .blocks import ConvBlock, DownBlock, Flatten, FCBlock, TimeFCBlock, Unflatten, UpBlock


class DenoisingUNet(nn.Module):
    """eps_theta(x_t, t): predicts the noise in x_t (Handout D, Figure 1)."""

    def __init__(self, in_channels=1, hidden=64, image_size=28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        D, S = hidden, image_size // 4
        self.conv_in = ConvBlock(in_channels, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = Flatten(S)
        self.unflatten = Unflatten(2 * D, S)
        self.up1 = UpBlock(4 * D, D)
        self.up2 = UpBlock(2 * D, D)
        self.conv_out = ConvBlock(2 * D, D)
        self.final = nn.Conv2d(D, in_channels, 3, padding=1)
        # time t/T enters through two FCBlocks, added to the unflatten and up1 outputs
        self.fc1_t = TimeFCBlock(2 * D)
        self.fc2_t = TimeFCBlock(D)

    def forward(self, x, t_frac):
        """x: (B, C, H, W) noisy images; t_frac: (B,) timesteps t already divided by T."""
        t1 = self.fc1_t(t_frac)[:, :, None, None]   # (B, 2D, 1, 1)
        t2 = self.fc2_t(t_frac)[:, :, None, None]   # (B, D, 1, 1)
        return self.body(x, t1, t2, c1=1.0, c2=1.0)

    def body(self, x, t1, t2, c1, c2):
        """The whole UNet, encoder to output; (c1, c2) scale and (t1, t2) shift its two modulated feature maps."""
        h = self.conv_in(x)                    # (B, D, H, W)        e.g. 28×28
        d1 = self.down1(h)                     # (B, D, H/2, W/2)    14×14
        d2 = self.down2(d1)                    # (B, 2D, H/4, W/4)   7×7
        bottleneck = self.flatten(d2)          # (B, 2D, 1, 1)
        # Handout D §3.1: unflatten = c1 * unflatten + t1
        u = c1 * self.unflatten(bottleneck) + t1   # (B, 2D, H/4, W/4)
        # Handout D §3.1: up1 = c2 * up1 + t2
        u1 = c2 * self.up1(torch.cat([u, d2], dim=1)) + t2   # (B, D, H/2, W/2)
        u2 = self.up2(torch.cat([u1, d1], dim=1))            # (B, D, H, W)
        out = self.conv_out(torch.cat([u2, h], dim=1))       # (B, D, H, W)
        return self.final(out)                               # (B, C, H, W)


class ConditionalDenoisingUNet(DenoisingUNet):
    """eps_theta(x_t, t, c): Handout D §3.1, class-conditioned through four FCBlocks.

    c is a one-hot class vector (B, K); `mask` (B,) is 1 to keep the label and 0 to drop
    it. A dropped label becomes the zero vector, which *is* the unconditional model.
    """

    def __init__(self, in_channels=1, hidden=64, image_size=28, num_classes=10):
        super().__init__(in_channels, hidden, image_size)
        self.num_classes = num_classes
        self.fc1_c = FCBlock(num_classes, 2 * hidden)
        self.fc2_c = FCBlock(num_classes, hidden)

    def forward(self, x, t_frac, c, mask=None):
        """x: (B, C, H, W); t_frac: (B,) = t/T; c: (B, K) one-hot; mask: (B,) 1 = keep, 0 = drop."""
        c = c.to(x.dtype)
        if mask is not None:
            c = c * mask.reshape(-1, 1).to(x.dtype)   # dropped label -> zero vector
        t1 = self.fc1_t(t_frac)[:, :, None, None]     # (B, 2D, 1, 1)
        t2 = self.fc2_t(t_frac)[:, :, None, None]     # (B, D, 1, 1)
        c1 = self.fc1_c(c)[:, :, None, None]          # (B, 2D, 1, 1)
        c2 = self.fc2_c(c)[:, :, None, None]          # (B, D, 1, 1)
        return self.body(x, t1, t2, c1, c2)


class TimeConditionedEncoder(nn.Module):
    """The down half of the UNet plus a time embedding, ending in a linear head: the noisy classifier
    p_φ(y | x_t, t) of 03 (10 logits) and the age regressor f(z_t, t) of 06 (1 output)."""

    def __init__(self, in_channels=1, hidden=64, image_size=28, out_features=10):
        super().__init__()
        D, S = hidden, image_size // 4
        self.conv_in = ConvBlock(in_channels, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = Flatten(S)
        self.fc_t = TimeFCBlock(2 * D)
        self.head = nn.Sequential(nn.Linear(2 * D, 2 * D), nn.GELU(), nn.Linear(2 * D, out_features))

    def forward(self, x, t_frac):
        """x: (B, C, H, W); t_frac: (B,) = t/T. Returns (B, out_features)."""
        h = self.down2(self.down1(self.conv_in(x)))   # (B, 2D, H/4, W/4)
        h = self.flatten(h).flatten(1)                # (B, 2D)
        h = h + self.fc_t(t_frac)
        return self.head(h)


# Handout E §7: the starter UNet is configured by `unet_dim` (width of the first level, 16; our --hidden) and
# `unet_dim_mults` ([1, 2, 4, 8]): level i has hidden · dim_mults[i] channels and every level after the first
# halves the resolution. On 32×32 images: (B, 16, 32, 32), (B, 32, 16, 16), (B, 64, 8, 8), (B, 128, 4, 4).
# The encoder goes down with DownBlocks, a ConvBlock works at the lowest level, and the decoder comes back up
# with UpBlocks fed the previous decoder output concatenated with the encoder output of the same resolution
# (the skip connection, Handout E Fig. 2). One FCBlock per level and side embeds t/T and adds it to that
# level's feature map. Deliberately plain: no ResNet blocks or attention, unlike the starter code.
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
