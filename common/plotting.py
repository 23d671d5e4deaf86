"""Every figure the scripts write: sample grids, labelled sweeps, loss curves, line plots.

Images come in as uint8 numpy arrays, (N, H, W) grayscale or (N, H, W, 3) colour
(see common.data.to_uint8). A grid of images is one tiled image in one axes (`mosaic`), and figure
titles wrap to the figure's width, so that a narrow grid (say three faces a row) keeps its whole title.
"""
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from .run import write_bytes  # noqa: E402

GAP = 2            # grey pixels between the cells of a tiled image
TITLE_WIDTH = 6.0  # inches: a figure with a title is at least this wide, so a narrow grid's title fits


def _save(fig, path):
    """The figure in the format its suffix names (.png), written atomically (run.write_bytes)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=Path(path).suffix[1:] or "png", dpi=100)
    finally:
        plt.close(fig)
    write_bytes(buffer.getvalue(), path)


def _show(ax, image):
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def save_grid(images, path, ncols=10, titles=None, suptitle=None, cell=1.0):
    """A plain grid of images, optionally one small title per image (e.g. its label), above it. Drawn as one
    tiled image in one axes (`mosaic`), which saves several times faster than an axes per image."""
    n, h, w = images.shape[:3]
    ncols = min(ncols, n)                                      # no empty cells beside a single short row
    nrows = -(-n // ncols)
    band = h // 3 if titles is not None else 0                 # room for a title above each image
    width = max(ncols * cell, TITLE_WIDTH if suptitle else 0)
    fig, ax = plt.subplots(figsize=(width, nrows * cell * (1.25 if titles else 1) + (0.5 if suptitle else 0)))
    _show(ax, mosaic(images, ncols, band=band))
    ax.axis("off")
    for i, title in enumerate(titles if titles is not None else []):
        r, c = divmod(i, ncols)                                # the title's bottom edge touches its image
        ax.text(c * (w + GAP) + w / 2, r * (band + h + GAP) + band - 1, str(title), ha="center", va="bottom",
                fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, wrap=True)
    fig.tight_layout()
    _save(fig, path)


def save_labelled_grid(images, path, row_labels, col_labels=None, suptitle=None, cell=1.0):
    """images: (R, C, H, W[, 3]), one tiled image: row labels on the left, column labels on top."""
    nrows, ncols, h, w = images.shape[:4]
    width = max(ncols * cell + 1.2, TITLE_WIDTH if suptitle else 0)
    fig, ax = plt.subplots(figsize=(width, nrows * cell + 0.8))
    _show(ax, mosaic(images.reshape(nrows * ncols, *images.shape[2:]), ncols))
    ax.set_yticks([r * (h + GAP) + h / 2 for r in range(nrows)], [str(label) for label in row_labels], fontsize=9)
    if col_labels is not None:
        ax.set_xticks([c * (w + GAP) + w / 2 for c in range(ncols)], [str(label) for label in col_labels],
                      fontsize=9)
        ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, wrap=True)
    fig.tight_layout()
    _save(fig, path)


def save_loss_curves(history, path, ylabel="loss", title="training loss"):
    """Handout D §2.3 deliverable 1: the loss of every batch and the mean of every epoch, axes labelled.
    history: {"batch": [[loss per batch] per epoch], "epoch": [mean per epoch]}."""
    batch = np.concatenate([np.asarray(b, dtype=float) for b in history["batch"]])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(np.arange(1, len(batch) + 1), batch, lw=0.6)
    ax1.set(xlabel="training step (batch)", ylabel=ylabel, title="batch loss", yscale="log")
    ax2.plot(np.arange(1, len(history["epoch"]) + 1), history["epoch"], marker="o")
    ax2.set(xlabel="epoch", ylabel=f"mean {ylabel}", title="epoch loss", yscale="log")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.84, wspace=0.28)   # fixed: tight_layout is slow
    _save(fig, path)


def save_line_plot(x, series, path, xlabel, ylabel, title=None, logx=False):
    """series: {name: list of y values}; one line with markers per name."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("symlog")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def save_curves(curves, path, xlabel, ylabel, title=None):
    """curves: {name: (x values, y values)}; lines may have different x (e.g. D and G steps of a GAN)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, lw=0.8, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def mosaic(images, ncols, band=0):
    """uint8 (N, H, W[, 3]), N >= 1 -> one tiled image, cells separated by GAP grey pixels; with `band` > 0,
    `band` rows above each row of cells for titles, and the background white so that the titles read well."""
    n, h, w = images.shape[:3]
    rows = -(-n // ncols)
    pitch_y, pitch_x = band + h + GAP, w + GAP
    canvas = np.full((rows * pitch_y - GAP, ncols * pitch_x - GAP) + images.shape[3:], 255 if band else 128,
                     dtype=images.dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * pitch_y + band:r * pitch_y + band + h, c * pitch_x:c * pitch_x + w] = image
    empty = rows * ncols - n
    if empty:   # the last row's unused cells, and the gaps around them, are left white like the page
        canvas[max(0, (rows - 1) * pitch_y - GAP):, (ncols - empty) * pitch_x - GAP:] = 255
    return canvas


def save_mosaic(images, path, ncols=10, title=None, row_labels=None, cell=0.6):
    """One tiled image in one axes (fast even for hundreds of images); optional labels, one per row."""
    image = mosaic(images, ncols)
    nrows = -(-len(images) // ncols)
    fig, ax = plt.subplots(figsize=(ncols * cell + (1.4 if row_labels else 0.3), nrows * cell + 0.6))
    _show(ax, image)
    if row_labels:
        step = image.shape[0] / nrows
        ax.set_yticks([step * (r + 0.5) for r in range(nrows)], [str(label) for label in row_labels[:nrows]])
        ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def save_panels(panels, path, ncols=8, suptitle=None, cell=0.5):
    """Side-by-side panels: {panel title: images (N, H, W[, 3])}, each panel one tiled grid."""
    mosaics = [mosaic(images, ncols) for images in panels.values()]
    height, width = mosaics[0].shape[:2]
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(len(panels) * ncols * cell + 0.5, height / width * ncols * cell + 0.9))
    for ax, title, image in zip(axes[0], panels, mosaics):
        _show(ax, image)
        ax.set_title(title, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, wrap=True)
    fig.tight_layout()
    _save(fig, path)
