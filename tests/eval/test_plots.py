import matplotlib
import numpy as np
import pytest
import torch
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sslray.data.readers.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, fashion_mnist_arrays
from sslray.eval.plots import (
    CURVES_SIZE,
    DPI,
    LEGEND_INSIDE_MAX,
    TSNE_SIZE,
    TSNEConfig,
    confusion_figure,
    curves_figure,
    knob_axis,
    knob_figure,
    plot_confusion,
    plot_curves,
    plot_tsne,
    row_normalized,
    stratified_indices,
    tsne_embedding,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TROUSER, BAG, ANKLE_BOOT = 1, 8, 9  # three Fashion-MNIST classes that look nothing alike


def read_png(path, size_inches):
    """The PNG's RGBA pixels, after checking its signature and that it is ``size_inches * DPI`` pixels."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    width, height = size_inches
    assert pixels.shape == (round(height * DPI), round(width * DPI), 4)
    return pixels


@pytest.fixture(scope="module")
def fashion_images():
    """600 real test images, 200 each of trouser, bag and ankle boot, as [600, 784] floats in [0, 1]."""
    assert FASHION_MNIST_DIR.is_dir(), f"{FASHION_MNIST_DIR} missing: `make test` installs dataset-fashion-mnist"
    images, labels = fashion_mnist_arrays("test")
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:200] for c in (TROUSER, BAG, ANKLE_BOOT)]))
    return torch.from_numpy(images[keep].reshape(len(keep), -1) / 255.0).float(), torch.from_numpy(labels[keep])


def one_nn_accuracy(points, labels):
    """Leave-one-out accuracy of the nearest other point's label."""
    distances = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(1)] == labels).mean())


def test_tsne_separates_real_fashion_mnist_classes(fashion_images):
    features, labels = fashion_images
    points = tsne_embedding(features, seed=0)
    labels = labels.numpy()
    assert points.shape == (600, 2) and np.isfinite(points).all()
    assert one_nn_accuracy(points, labels) > 0.9
    centroids = np.stack([points[labels == c].mean(0) for c in (TROUSER, BAG, ANKLE_BOOT)])
    nearest = np.array([TROUSER, BAG, ANKLE_BOOT])[((points[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    assert (nearest == labels).mean() > 0.9
    # The same map with the labels shuffled is near chance (1/3): the score measures the classes, not the map.
    assert one_nn_accuracy(points, np.random.default_rng(0).permutation(labels)) < 0.5


def test_tsne_same_seed_same_map(fashion_images):
    features = fashion_images[0][::5]  # 120 images: determinism does not need many
    first, again, other = (
        tsne_embedding(features, seed=3),
        tsne_embedding(features, seed=3),
        tsne_embedding(features, seed=4),
    )
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_tsne_rejects_too_few_points():
    with pytest.raises(ValueError, match="N >= 4"):
        tsne_embedding(np.zeros((3, 5)))


def test_stratified_indices_keep_class_shares_and_are_deterministic():
    labels = np.repeat([2, 0, 1], [500, 300, 200])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    chosen = stratified_indices(labels, 100, seed=7)
    assert len(chosen) == 100 and len(np.unique(chosen)) == 100 and np.all(np.diff(chosen) > 0)
    assert {c: int(np.sum(labels[chosen] == c)) for c in (0, 1, 2)} == {0: 30, 1: 20, 2: 50}
    np.testing.assert_array_equal(chosen, stratified_indices(labels, 100, seed=7))
    assert not np.array_equal(chosen, stratified_indices(labels, 100, seed=8))
    # Shares that do not divide evenly: 10 of (7, 7, 6) is (3.5, 3.5, 3) -> exactly 10 rows, 3 or 4 per class.
    uneven = np.repeat([0, 1, 2], [7, 7, 6])
    picked = uneven[stratified_indices(uneven, 10)]
    assert len(picked) == 10 and sorted(np.bincount(picked)) == [3, 3, 4]
    np.testing.assert_array_equal(stratified_indices(labels[:50], 100), np.arange(50))  # already small enough


def test_plot_tsne_writes_png_coloured_by_class(fashion_images, tmp_path):
    features, labels = fashion_images
    path = plot_tsne(
        features,
        labels,
        tmp_path / "a" / "b" / "tsne.png",
        class_names=FASHION_MNIST_CLASSES,
        title="fashion-mnist pixels",
        tsne=TSNEConfig(max_points=150),
    )
    assert path == tmp_path / "a" / "b" / "tsne.png"
    rgb = read_png(path, TSNE_SIZE)[..., :3]
    tab10 = matplotlib.colormaps["tab10"]

    def pixels_of(class_id):  # points are drawn with alpha 0.8 on white
        colour = 0.8 * np.array(tab10(class_id)[:3]) + 0.2
        return int(np.sum(np.abs(rgb - colour).max(-1) < 0.03))

    assert all(pixels_of(c) > 20 for c in (TROUSER, BAG, ANKLE_BOOT))
    assert pixels_of(0) == 0 and pixels_of(3) == 0  # classes absent from the data get no colour


def test_plot_tsne_checks_names_and_lengths(tmp_path):
    with pytest.raises(ValueError, match="no name"):
        plot_tsne(np.zeros((10, 2)), np.arange(10) % 3, tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(ValueError, match="10 features but 9 labels"):
        plot_tsne(np.zeros((10, 2)), np.zeros(9, dtype=int), tmp_path / "x.png")


def test_curves_figure_lines_baselines_and_integer_ticks():
    series = {"simclr": [(1, 0.5), (2, 0.6), (3, 0.7)], "mae": [(1, 0.4)], "empty": []}
    fig = curves_figure(series, title="kNN", xlabel="epoch", ylabel="top-1", baselines={"raw pixels kNN": 0.855})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"simclr", "mae", "raw pixels kNN (0.855)"}
    assert lines["mae"].get_marker() not in (None, "", "None")  # a 1-point series shows as a dot
    baseline = lines["raw pixels kNN (0.855)"]
    assert baseline.get_linestyle() == "--" and set(baseline.get_ydata()) == {0.855}
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert ax.get_legend() is not None and not fig.legends
    fractional = curves_figure({"probe": [(0.5, 0.1), (1.5, 0.2)]}, title="t", xlabel="x", ylabel="y").axes[0]
    assert not all(float(t).is_integer() for t in fractional.get_xticks())


def test_many_curves_put_the_legend_beside_the_axes():
    series = {f"trial_{i}": [(1, i / 20), (2, i / 10)] for i in range(LEGEND_INSIDE_MAX + 1)}
    fig = curves_figure(series, title="t", xlabel="epoch", ylabel="loss")
    assert len(fig.legends) == 1 and fig.axes[0].get_legend() is None
    styles = {(line.get_color(), line.get_marker()) for line in fig.axes[0].get_lines()}
    assert len(styles) == len(series)  # no two series look alike


def test_plot_curves_writes_png_of_the_figure_size(tmp_path):
    path = plot_curves(
        {"byol": [(1, 0.3), (2, 0.5)]},
        tmp_path / "new" / "knn.png",
        title="kNN",
        xlabel="epoch",
        ylabel="top-1",
        baselines={"random init": 0.2},
    )
    assert path == tmp_path / "new" / "knn.png"
    read_png(path, CURVES_SIZE)


def test_row_normalized_rows_sum_to_one_and_empty_rows_stay_zero():
    counts = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])
    shares = row_normalized(counts)
    np.testing.assert_allclose(shares.sum(1), [1, 0, 1])
    np.testing.assert_allclose(shares[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(shares[2], [0.25, 0.25, 0.5])


def test_confusion_figure_shows_shares_or_counts_with_annotations():
    counts = np.array([[90, 10], [1, 3]])  # rows of very different sizes: shares make them comparable
    ax = confusion_figure(counts, class_names=["cat", "dog"], title="t").axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.9, 0.1], [0.25, 0.75]])
    assert sorted(t.get_text() for t in ax.texts) == ["0.10", "0.25", "0.75", "0.90"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
    raw = confusion_figure(counts, class_names=["cat", "dog"], title="t", normalize=False).axes[0]
    np.testing.assert_allclose(raw.images[0].get_array(), counts)
    assert sorted(t.get_text() for t in raw.texts) == ["1", "10", "3", "90"]
    many = confusion_figure(np.eye(21, dtype=int), class_names=[str(c) for c in range(21)], title="t").axes[0]
    assert not many.texts  # 441 numbers would be unreadable


def test_plot_confusion_writes_png_and_checks_shapes(tmp_path):
    counts = np.random.default_rng(0).integers(0, 50, (10, 10))
    names = FASHION_MNIST_CLASSES
    path = plot_confusion(counts, tmp_path / "deep" / "confusion.png", class_names=names, title="linear probe")
    read_png(path, confusion_figure(counts, class_names=names, title="linear probe").get_size_inches())
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.zeros((2, 3)), tmp_path / "x.png", class_names=["a", "b"], title="t")
    with pytest.raises(ValueError, match="2 class names"):
        plot_confusion(np.zeros((3, 3)), tmp_path / "x.png", class_names=["a", "b"], title="t")


def test_knob_axis_spreads_momenta_and_learning_rates():
    assert knob_axis([0.0, 0.9, 0.99, 0.999]) == "1 - value, log"
    assert knob_axis([1e-4, 3e-3, 5e-3]) == "log"
    assert knob_axis([0.1, 0.2, 0.5]) == "linear"
    assert knob_axis(["simclr", "mae"]) == "categories"


def test_momenta_sit_apart_in_order_and_their_ticks_read_as_momenta():
    momenta = (0.0, 0.9, 0.99, 0.999)
    points = [
        {"value": v, "knn": {"mean": m, "std": 0.01, "values": [m]}} for v, m in zip(momenta, (0.45, 0.47, 0.61, 0.63))
    ]
    fig = knob_figure(points, {"raw pixels": {"knn": 0.71}}, knob="method.momentum", metrics={"knn": "kNN"}, title="t")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    xs = ax.transData.transform([(1 - v, 0.5) for v in momenta])[:, 0]
    assert all(b - a > 0.15 * ax.bbox.width for a, b in zip(xs, xs[1:]))  # left to right, well apart
    labels = {t.get_text() for t in ax.get_xticklabels()}
    assert {"0.9", "0.99", "0.999"} <= labels, labels
