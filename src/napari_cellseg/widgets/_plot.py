"""A small matplotlib plot that lives inside a dock widget, in napari's theme colours."""
from __future__ import annotations


def theme_colours(theme_name: str | None) -> dict:
    """Background, foreground and text colours of a napari theme (dark defaults without napari)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name or "dark")
        return {"background": theme.canvas.as_hex(), "text": theme.text.as_hex(), "grid": theme.foreground.as_hex()}
    except Exception:  # noqa: BLE001 - an unknown theme still gets a readable plot
        return {"background": "#262930", "text": "#f0f1f2", "grid": "#414851"}


class LinePlot:
    """Owns a Qt canvas, hidden until there is something to show; ``show(x, y, ...)`` redraws it."""

    def __init__(self, height_px: int = 180, viewer=None):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 2), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height_px)
        self.canvas.setVisible(False)  # no empty frame before the first result
        self.lines: dict[str, tuple] = {}
        self._viewer = viewer
        if viewer is not None:
            viewer.events.theme.connect(lambda *_: self._apply_theme() or self.canvas.draw_idle())

    def _apply_theme(self) -> dict:
        colours = theme_colours(getattr(self._viewer, "theme", None))
        self.figure.set_facecolor(colours["background"])
        self.axes.set_facecolor(colours["background"])
        for spine in self.axes.spines.values():
            spine.set_color(colours["grid"])
        self.axes.tick_params(colors=colours["text"])
        self.axes.xaxis.label.set_color(colours["text"])
        self.axes.yaxis.label.set_color(colours["text"])
        self.axes.title.set_color(colours["text"])
        return colours

    def hide(self) -> None:
        self.canvas.setVisible(False)

    def show(self, x, y, *, xlabel: str, ylabel: str, title: str = "", label: str | None = None, clear=True):
        if clear:
            self.axes.clear()
            self.lines.clear()
        self.axes.plot(x, y, marker="o", markersize=3, label=label)
        self.lines[label or ylabel] = (list(x), list(y))
        self.axes.set_xlabel(xlabel)
        self.axes.set_ylabel(ylabel)
        self.axes.set_title(title, fontsize=9)
        colours = self._apply_theme()
        if label:
            legend = self.axes.legend(fontsize=7, facecolor=colours["background"], edgecolor=colours["grid"])
            for text in legend.get_texts():
                text.set_color(colours["text"])
        self.canvas.setVisible(True)
        self.canvas.draw_idle()
