"""The figure helpers put every image where its labels say (they draw one tiled image, see common/plotting.py)."""
import matplotlib.image
import numpy as np
import pytest

import common.plotting as plotting
from common.plotting import GAP, mosaic, save_grid, save_labelled_grid


def tiles(n, h=28, w=28):
    """n constant images with distinct grey levels 10, 20, ..., none of them a background's (128 or 255)."""
    levels = np.arange(1, n + 1) * 10
    assert 128 not in levels and 255 not in levels
    return np.repeat(levels.astype(np.uint8), h * w).reshape(n, h, w), levels


def centre_of(png, level):
    """(row, column) centre of the pixels of one grey level in a saved figure."""
    grey = np.round(matplotlib.image.imread(png)[..., 0] * 255)
    rows, cols = np.nonzero(grey == level)
    assert len(rows) > 100, f"grey level {level} is not in the figure"
    return rows.mean(), cols.mean()


@pytest.fixture
def figures(monkeypatch):
    """Every figure the helpers save, kept for a look at its labels (the PNG is still written)."""
    saved, real_save = [], plotting._save
    monkeypatch.setattr(plotting, "_save", lambda fig, path: (saved.append(fig), real_save(fig, path)))
    return saved


def test_mosaic_puts_image_i_at_row_i_div_ncols_and_column_i_mod_ncols():
    images, levels = tiles(5, h=3, w=4)
    canvas = mosaic(images, ncols=2)
    assert canvas.shape == (3 * 3 + 2 * GAP, 2 * 4 + GAP)           # 3 rows, 2 columns, gaps between
    for i, level in enumerate(levels):
        r, c = divmod(i, 2)
        assert (canvas[r * (3 + GAP):r * (3 + GAP) + 3, c * (4 + GAP):c * (4 + GAP) + 4] == level).all()
    assert (canvas[2 * (3 + GAP) - GAP:, 4:] == 255).all()         # the missing 6th cell is left white
    assert (canvas[:2 * (3 + GAP) - GAP, 4:4 + GAP] == 128).all()   # the gaps between cells are grey


def test_mosaic_leaves_a_white_band_above_each_row_for_titles():
    images, _ = tiles(4, h=3, w=4)
    canvas = mosaic(np.stack([images] * 3, axis=-1), ncols=2, band=5)   # colour images too
    assert canvas.shape == (2 * (5 + 3) + GAP, 2 * 4 + GAP, 3)
    for r in range(2):
        assert (canvas[r * (5 + 3 + GAP):r * (5 + 3 + GAP) + 5] == 255).all()
    assert (canvas[5:8, :4] == 10).all() and (canvas[5 + 3 + GAP + 5:, 4 + GAP:] == 40).all()


def test_labelled_grid_draws_row_r_column_c_where_its_labels_are(tmp_path, figures):
    images, levels = tiles(6)
    save_labelled_grid(images.reshape(2, 3, 28, 28), tmp_path / "grid.png", row_labels=["a", "b\nc"],
                       col_labels=["x", "y", "z"], suptitle="title")
    centres = np.array([centre_of(tmp_path / "grid.png", level) for level in levels]).reshape(2, 3, 2)
    assert (centres[1, :, 0] > centres[0, :, 0] + 50).all()           # row 1 below row 0
    assert (np.diff(centres[:, :, 1], axis=1) > 50).all()             # columns left to right
    (fig,), pitch = figures, 28 + GAP
    ax = fig.axes[0]
    assert list(ax.get_yticks()) == [14, 14 + pitch] and [t.get_text() for t in ax.get_yticklabels()] == ["a", "b\nc"]
    assert list(ax.get_xticks()) == [14, 14 + pitch, 14 + 2 * pitch]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"] and ax.xaxis.get_ticks_position() == "top"
    assert "title" in [t.get_text() for t in fig.texts]


def test_grid_with_titles_keeps_the_images_in_reading_order(tmp_path, figures):
    images, levels = tiles(6)
    save_grid(images, tmp_path / "grid.png", ncols=4, titles=list("abcdef"), suptitle="epoch 1")
    centres = [centre_of(tmp_path / "grid.png", level) for level in levels]
    assert centres[4][0] > centres[0][0] + 50 and centres[5][0] > centres[3][0] + 50   # 5th, 6th on row 2
    assert all(centres[i + 1][1] > centres[i][1] + 50 for i in (0, 1, 2, 4))
    (fig,) = figures
    band, pitch_x = 28 // 3, 28 + GAP
    titles = fig.axes[0].texts
    assert [t.get_text() for t in titles] == list("abcdef") and "epoch 1" in [t.get_text() for t in fig.texts]
    for i, title in enumerate(titles):                   # centred over its image, in the band just above it
        r, c = divmod(i, 4)
        x, y = title.get_position()
        top = r * (band + 28 + GAP) + band               # the image's first row
        assert x == c * pitch_x + 14 and top - band <= y < top and title.get_va() == "bottom"


def test_a_single_short_row_is_as_wide_as_its_images(tmp_path):
    images, _ = tiles(3)
    save_grid(images, tmp_path / "grid.png", ncols=10)                 # 3 images, not 10 cells of 1 inch
    assert matplotlib.image.imread(tmp_path / "grid.png").shape[1] <= 300
