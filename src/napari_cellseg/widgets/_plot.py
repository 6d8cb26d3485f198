"""A small matplotlib plot that lives inside a dock widget, in napari's theme colours.

The figure is drawn by matplotlib's Agg renderer in a background thread and only the finished picture
is shown on the GUI thread: drawing even a small figure (text layout, ticks, transforms) takes
100-200 ms of Python on a loaded 2-core machine, and a training widget redraws its curves every
epoch. All changes to the figure run in that thread too, in order (``show`` and ``decorate`` queue
them), so the GUI thread never touches the figure while it is being drawn.
"""
from __future__ import annotations

import threading


def theme_colours(theme_name: str | None) -> dict:
    """Background, foreground and text colours of a napari theme (dark defaults without napari)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name or "dark")
        return {"background": theme.canvas.as_hex(), "text": theme.text.as_hex(), "grid": theme.foreground.as_hex()}
    except Exception:  # noqa: BLE001 - an unknown theme still gets a readable plot
        return {"background": "#262930", "text": "#f0f1f2", "grid": "#414851"}


def _plot_view_class():
    from qtpy.QtCore import QObject, Signal
    from qtpy.QtWidgets import QLabel, QSizePolicy

    class Bridge(QObject):
        rendered = Signal(object)  # emitted in the drawing thread, delivered in the GUI thread

    class PlotView(QLabel):
        """Shows the drawn picture; ``draw_idle()`` asks for a redraw (as matplotlib's canvas does)."""

        def __init__(self, plot, height_px: int):
            super().__init__()
            self._plot = plot
            self.setFixedHeight(height_px)
            # the picture follows the dock's width and never widens it
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            self.bridge = Bridge()
            self.bridge.rendered.connect(self._show_picture)

        def draw_idle(self) -> None:
            self._plot.render()

        def resizeEvent(self, event):  # noqa: N802 - Qt's name
            super().resizeEvent(event)
            if self._plot.has_content:
                self._plot.render()

        def _show_picture(self, picture) -> None:
            from qtpy.QtGui import QImage, QPixmap

            data, width, height, ratio = picture
            image = QImage(data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
            pixmap = QPixmap.fromImage(image)  # a copy: ``data`` may go
            pixmap.setDevicePixelRatio(ratio)
            try:
                self.setPixmap(pixmap)
            except RuntimeError:  # the widget was closed meanwhile
                pass

    return PlotView


class LinePlot:
    """Owns a Qt view, hidden until there is something to show; ``show(x, y, ...)`` redraws it.
    ``lines`` holds the data shown, at once (the picture follows when drawn)."""

    def __init__(self, height_px: int = 180, viewer=None):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 2), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self._agg = FigureCanvasAgg(self.figure)
        self.canvas = _plot_view_class()(self, height_px)
        self.canvas.setVisible(False)  # no empty frame before the first result
        self.lines: dict[str, tuple] = {}
        self.has_content = False
        self.drawn = threading.Event()  # set after each finished drawing (for tests and benchmarks)
        self.drawing_threads: set[int] = set()
        self._ops: list = []
        self._lock = threading.Lock()
        self._dirty = self._busy = False
        self._viewer = viewer
        if viewer is not None:
            viewer.events.theme.connect(lambda *_: self.decorate(lambda _axes: self._apply_theme()))

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

    def decorate(self, change) -> None:
        """Run ``change(axes)`` in the drawing thread, after the changes queued before it, then redraw."""
        with self._lock:
            self._ops.append(lambda: change(self.axes))
        self.render()

    def show(self, x, y, *, xlabel: str, ylabel: str, title: str = "", label: str | None = None, clear=True):
        x, y = list(x), list(y)
        if clear:
            self.lines.clear()
        self.lines[label or ylabel] = (x, y)

        def draw(axes):
            if clear:
                axes.clear()
            axes.plot(x, y, marker="o", markersize=3, label=label)
            axes.set_xlabel(xlabel)
            axes.set_ylabel(ylabel)
            axes.set_title(title, fontsize=9)
            colours = self._apply_theme()
            if label:
                legend = axes.legend(fontsize=7, facecolor=colours["background"], edgecolor=colours["grid"])
                for text in legend.get_texts():
                    text.set_color(colours["text"])

        self.has_content = True
        self.canvas.setVisible(True)
        self.decorate(draw)

    def render(self) -> None:
        """Draw the figure at the view's size in the drawing thread (one at a time; requests made
        meanwhile are drawn together once it is done)."""
        with self._lock:
            self._dirty = True
            size = (max(self.canvas.width(), 100), self.canvas.height(), self.canvas.devicePixelRatioF())
            self._size = size
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._draw_until_clean, name="napari-cellseg-plot", daemon=True).start()

    def _draw_until_clean(self) -> None:
        while True:
            with self._lock:
                if not self._dirty:
                    self._busy = False
                    return
                self._dirty = False
                ops, self._ops = self._ops, []
                width, height, ratio = self._size
            self.drawing_threads.add(threading.get_ident())
            try:
                for op in ops:
                    op()
                dpi = 100 * ratio
                self.figure.set_dpi(dpi)
                self.figure.set_size_inches(width * ratio / dpi, height * ratio / dpi)
                self._agg.draw()
                pixels_w, pixels_h = self._agg.get_width_height(physical=True)
                data = bytes(self._agg.buffer_rgba())
            except Exception:  # noqa: BLE001 - a failed drawing leaves the last picture; the data is in ``lines``
                continue
            try:
                self.canvas.bridge.rendered.emit((data, pixels_w, pixels_h, ratio))
            except RuntimeError:  # the widget is gone
                return
            self.drawn.set()
