"""Widget controls built from a job's options object (core.options): labels, ranges, tooltips and the
"model's" setting come from the same definitions as the CLI's arguments."""
from __future__ import annotations

from dataclasses import MISSING

from magicgui import widgets

from ..core.options import option_fields, spec_of


def _unset_text(spec) -> str:
    return "model's" if spec.model_value else (spec.none_text or "")


def control_for(f):
    """A magicgui widget for one option field."""
    spec = spec_of(f)
    label = spec.label or f.name.replace("_", " ")
    if spec.unit and spec.unit not in label:
        label += f" ({spec.unit.replace('image ', '').replace('network ', '')})"
    tooltip = spec.tooltip()
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        return widgets.CheckBox(label=label, value=default, tooltip=tooltip)
    if spec.choices:
        return widgets.ComboBox(label=label, choices=list(spec.choices), value=default, tooltip=tooltip)
    if spec.parse is not None or spec.min is None:  # free text parsed by the option (diameter, class pairs)
        text = "" if default is None else str(default)
        if isinstance(default, dict):
            text = ", ".join(f"{k}={v}" for k, v in default.items())
        return widgets.LineEdit(label=label, value=text, tooltip=tooltip)
    is_int = isinstance(spec.step, int) or (spec.step is None and float(spec.min).is_integer()
                                            and "float" not in str(f.type))
    step = spec.step or (1 if is_int else 0.05)
    unset = _unset_text(spec)
    low = spec.min - step if unset else spec.min  # one step below the range: the unset value
    cls = widgets.SpinBox if is_int and "float" not in str(f.type) else widgets.FloatSpinBox
    control = cls(label=label, value=low if default is None else default, min=low, max=spec.max, step=step,
                  tooltip=tooltip)
    if unset:
        control.native.setSpecialValueText(unset)  # Qt shows this word at the minimum
    control._unset_value = low if unset else None
    return control


def control_value(f, control):
    """The option's value from its control (None where the control shows its unset word)."""
    spec = spec_of(f)
    value = control.value
    if getattr(control, "_unset_value", None) is not None and value <= control._unset_value:
        return None
    if isinstance(control, widgets.LineEdit):
        return spec.parse(value) if spec.parse is not None else (value or None)
    return value


class OptionControls:
    """Controls for the options of one job: ``main`` (shown first) and ``advanced`` lists."""

    def __init__(self, options_cls, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
        self.options_cls = options_cls
        self.fields = [f for f in option_fields(options_cls) if spec_of(f).widget and f.name not in skip
                       and (only is None or f.name in only)]
        self.controls = {f.name: control_for(f) for f in self.fields}
        self.main = [self.controls[f.name] for f in self.fields if not spec_of(f).advanced]
        self.advanced = [self.controls[f.name] for f in self.fields if spec_of(f).advanced]

    def __getitem__(self, name: str):
        return self.controls[name]

    def options(self):
        """The options object the controls describe (ValueError, naming the control, for a bad entry)."""
        values = {}
        for f in self.fields:
            try:
                values[f.name] = control_value(f, self.controls[f.name])
            except ValueError as exc:
                raise ValueError(f"{self.controls[f.name].label}: {exc}") from None
        options = self.options_cls(**values)
        options.check()
        return options

    def show_for_backends(self, backends: set[str] | None) -> None:
        """Hide the options that apply to other backends only (``None``: not known yet, show all)."""
        for f in self.fields:
            applies = spec_of(f).backends
            self.controls[f.name].visible = not applies or backends is None or bool(set(applies) & backends)


class Collapsible(widgets.Container):
    """A titled section that opens and closes (closed at first): the "Advanced" options."""

    def __init__(self, title: str, controls: list, opened: bool = False):
        self.toggle = widgets.PushButton(text=title, tooltip=f"show or hide the {title.lower()} options")
        self.toggle.native.setCheckable(True)
        self.body = widgets.Container(widgets=controls, labels=True)
        super().__init__(widgets=[self.toggle, self.body], labels=False)
        self.margins = (0, 0, 0, 0)
        self._title = title
        self.toggle.changed.connect(self._flip)
        self.set_open(opened)

    def _flip(self, *_):
        self.set_open(not self.opened)

    def set_open(self, opened: bool) -> None:
        self.opened = opened
        self.body.visible = opened
        self.toggle.text = f"{'▾' if opened else '▸'} {self._title}"
