"""The confusion matrix of a classification output: counts, the most confused pairs
as a markdown table, and the row-normalised heatmap image (matplotlib, Agg).

Row i holds the examples of true class i, column j where they were predicted; a
row normalised is the share of the true class's examples. `markdown_cell` makes
any text safe in a markdown table cell (TensorBoard's text plugin).
"""

import numpy as np

TOP_CONFUSED = 10  # rows of the most-confused table
DPI = 100
_CELL_INCHES = 0.22  # a heatmap cell at many classes (46 classes: ~10 inches)
_MATRIX_MIN_INCHES = 3.0
_CHAR_INCHES = 0.075  # one tick-label character at _TICK_POINTS
_TICK_POINTS = 8
_ANNOTATE_UP_TO = 15  # classes whose heatmap cells also show their share as a number


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """The [n, n] counts of examples of true class i predicted as class j."""
    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of the true class); all-zero rows stay 0."""
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(totals, 1)


def class_names(given, n: int) -> tuple:
    """`n` class names: the given ones, "class i" for those missing."""
    given = tuple(given or ())
    return tuple(str(given[i]) if i < len(given) else f"class {i}" for i in range(n))


def most_confused(counts: np.ndarray, top: int = TOP_CONFUSED) -> list:
    """[(true, predicted, count, share of the true class)] of the `top` most frequent
    mistakes, most frequent first (ties: lower true, then predicted class first)."""
    off = counts.copy()
    np.fill_diagonal(off, 0)
    shares = row_normalised(counts)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(int(t), int(q), int(off[t, q]), float(shares[t, q])) for t, q in pairs if off[t, q]]


def most_confused_table(counts: np.ndarray, names: tuple) -> str:
    """`most_confused` as a markdown table."""
    rows = most_confused(counts)
    if not rows:
        return f"No confusions: all {int(counts.sum())} validation examples are right."
    lines = ["| true | predicted | count | share of true class |", "|---|---|---|---|"]
    lines += [
        f"| {markdown_cell(names[t])} | {markdown_cell(names[q])} | {count} | {share:.1%} |"
        for t, q, count, share in rows
    ]
    return "\n".join(lines)


def markdown_cell(text: str) -> str:
    """Text safe in a markdown table cell."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


# --- The heatmap -----------------------------------------------------------------------


def _layout(names: tuple) -> dict:
    """The confusion-matrix figure's parts, in inches: the matrix (square), the
    margin for the tick labels and axis title (left and below), the title above and
    the colour bar to the right."""
    matrix = max(_MATRIX_MIN_INCHES, _CELL_INCHES * len(names))
    margin = 0.6 + _CHAR_INCHES * max(len(name) for name in names)
    return {
        "matrix": matrix,
        "margin": margin,
        "width": margin + matrix + 1.1,
        "height": margin + matrix + 0.5,
    }


def heatmap_size(names: tuple) -> tuple:
    """(width, height) in pixels of the confusion-matrix image for these classes."""
    layout = _layout(names)
    return round(layout["width"] * DPI), round(layout["height"] * DPI)


def heatmap(counts: np.ndarray, names: tuple, title: str = "") -> np.ndarray:
    """The row-normalised confusion matrix as an RGB image [height, width, 3] (uint8):
    a cell per (true, predicted) pair, its colour the share of the true class's
    examples; the shares written in the cells up to `_ANNOTATE_UP_TO` classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(names)
    layout = _layout(names)
    width, height = heatmap_size(names)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    x0, y0 = layout["margin"] * DPI / width, layout["margin"] * DPI / height
    side_x, side_y = layout["matrix"] * DPI / width, layout["matrix"] * DPI / height
    axes = figure.add_axes([x0, y0, side_x, side_y])
    bar = figure.add_axes([x0 + side_x + 0.15 * DPI / width, y0, 0.15 * DPI / width, side_y])
    shares = row_normalised(counts)
    shown = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(shown, cax=bar).ax.tick_params(labelsize=_TICK_POINTS)
    plain = [name.replace("$", r"\$") for name in names]
    axes.set_xticks(range(n), plain, rotation=90, fontsize=_TICK_POINTS)
    axes.set_yticks(range(n), plain, fontsize=_TICK_POINTS)
    axes.set_xlabel("predicted", fontsize=_TICK_POINTS + 2)
    axes.set_ylabel("true", fontsize=_TICK_POINTS + 2)
    axes.set_title(title or "confusion matrix (each true class's row sums to 1)", fontsize=10)
    if n <= _ANNOTATE_UP_TO:
        for (t, q), share in np.ndenumerate(shares):
            color = "white" if share > 0.5 else "black"
            axes.text(q, t, f"{share:.2f}", ha="center", va="center", fontsize=7, color=color)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
