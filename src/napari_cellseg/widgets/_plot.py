"""A small matplotlib plot that lives inside a dock widget."""
from __future__ import annotations


class LinePlot:
    """Owns a Qt canvas; ``show(x, y, ...)`` redraws it."""

    def __init__(self, height_px: int = 180):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 2), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height_px)
        self.lines: dict[str, tuple] = {}

    def show(self, x, y, *, xlabel: str, ylabel: str, title: str = "", label: str | None = None, clear=True):
        if clear:
            self.axes.clear()
            self.lines.clear()
        self.axes.plot(x, y, marker="o", markersize=3, label=label)
        self.lines[label or ylabel] = (list(x), list(y))
        self.axes.set_xlabel(xlabel)
        self.axes.set_ylabel(ylabel)
        self.axes.set_title(title, fontsize=9)
        if label:
            self.axes.legend(fontsize=7)
        self.canvas.draw_idle()
