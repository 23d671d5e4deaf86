"""Every figure the scripts write: sample grids, labelled sweeps, loss curves, line plots.

Images come in as uint8 numpy arrays, (N, H, W) grayscale or (N, H, W, 3) colour
(see common.data.to_uint8).
"""
import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _show(ax, image):
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def save_grid(images, path, ncols=10, titles=None, suptitle=None, cell=1.0):
    """A plain grid of images, optionally one small title per image (e.g. its label)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell, nrows * cell * (1.25 if titles else 1)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i])
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7, pad=2)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_labelled_grid(images, path, row_labels, col_labels=None, suptitle=None, cell=1.0,
                       row_title=None, col_title=None):
    """images: (R, C, H, W[, 3]). Row labels on the left, column labels on top."""
    nrows, ncols = images.shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell + 1.2, nrows * cell + 0.8),
                             squeeze=False)
    for r in range(nrows):
        for c in range(ncols):
            _show(axes[r, c], images[r, c])
        axes[r, 0].set_ylabel(str(row_labels[r]), rotation=0, ha="right", va="center", fontsize=9)
    if col_labels is not None:
        for c in range(ncols):
            axes[0, c].set_title(str(col_labels[c]), fontsize=9)
    if row_title:
        fig.text(0.01, 0.5, row_title, rotation=90, va="center")
    if col_title or suptitle:
        fig.suptitle(suptitle or col_title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_loss_curves(batch_losses, epoch_losses, path, ylabel="loss", title=None):
    """Handout D §2.3 deliverable 1: batch loss and epoch loss, with labelled axes."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(np.arange(1, len(batch_losses) + 1), batch_losses, lw=0.6)
    ax1.set(xlabel="training step (batch)", ylabel=ylabel, title="batch loss", yscale="log")
    ax2.plot(np.arange(1, len(epoch_losses) + 1), epoch_losses, marker="o")
    ax2.set(xlabel="epoch", ylabel=f"mean {ylabel}", title="epoch loss", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    fig.savefig(path, dpi=100)
    plt.close(fig)
