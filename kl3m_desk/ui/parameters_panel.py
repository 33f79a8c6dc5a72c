"""Sliders for the sampling parameters and the stop option, built from kl3m_desk.params."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSlider,
    QSpinBox,
    QWidget,
)

from kl3m_desk.params import PARAMETERS, STOP_AT, ChoiceSpec, ParameterSpec, SamplingParams


class ParameterRow:
    """A slider and a spin box kept in step for one numeric parameter."""

    def __init__(
        self, spec: ParameterSpec, layout: QGridLayout, row: int, on_change: object
    ) -> None:
        self.spec = spec
        self._scale = 10**spec.decimals
        self.label = QLabel(spec.label)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setAccessibleName(spec.label)
        self.box: QSpinBox | QDoubleSpinBox
        if spec.kind == "int":
            self.box = QSpinBox()
        else:
            self.box = QDoubleSpinBox()
            self.box.setDecimals(spec.decimals)
            self.box.setSingleStep(spec.step)
        self.box.setAccessibleName(spec.label)
        self.box.setKeyboardTracking(False)
        tooltip = f"{spec.help} Range {spec.describe_range()}"
        tooltip += f" {spec.unit}." if spec.unit else "."
        for widget in (self.label, self.slider, self.box):
            widget.setToolTip(tooltip)
        self.label.setBuddy(self.box)
        self.set_range(spec.minimum, spec.maximum)
        self.slider.valueChanged.connect(self._slider_moved)
        self.box.valueChanged.connect(self._box_changed)
        self.box.valueChanged.connect(lambda _value: on_change())  # type: ignore[operator]
        layout.addWidget(self.label, row, 0)
        layout.addWidget(self.slider, row, 1)
        layout.addWidget(self.box, row, 2)

    def set_range(self, minimum: float, maximum: float) -> None:
        """Set the range of both widgets; the current value is pulled into it."""
        self.slider.setRange(round(minimum * self._scale), round(maximum * self._scale))
        self.slider.setSingleStep(max(1, round(self.spec.step * self._scale)))
        self.box.setRange(minimum, maximum)  # type: ignore[arg-type]

    def value(self) -> float:
        """Return the spin box value, which is authoritative."""
        return float(self.box.value())

    def set_value(self, value: float) -> None:
        """Show `value` in both widgets."""
        self.box.setValue(value)  # type: ignore[arg-type]

    def _slider_moved(self, position: int) -> None:
        value = position / self._scale
        if abs(self.value() - value) >= 0.5 / self._scale:
            self.box.setValue(value)

    def _box_changed(self, value: float) -> None:
        position = round(value * self._scale)
        if self.slider.value() != position:
            self.slider.blockSignals(True)
            self.slider.setValue(position)
            self.slider.blockSignals(False)


class ParametersPanel(QWidget):
    """Sampling controls derived from `PARAMETERS`; emits the validated values on every change."""

    # SamplingParams after any change
    params_changed = Signal(object)

    def __init__(self, params: SamplingParams, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setColumnStretch(1, 1)
        self._rows: dict[str, ParameterRow] = {}
        self._seed_box: QLineEdit | None = None
        self._updating = False
        for index, spec in enumerate(PARAMETERS):
            if spec.optional:
                self._seed_box = self._add_optional_row(spec, layout, index)
            else:
                self._rows[spec.name] = ParameterRow(spec, layout, index, self._emit_change)
        self.stop_at_box = self._add_choice_row(STOP_AT, layout, len(PARAMETERS))
        self.set_params(params)

    def _add_optional_row(self, spec: ParameterSpec, layout: QGridLayout, row: int) -> QLineEdit:
        label = QLabel(spec.label)
        box = QLineEdit()
        box.setPlaceholderText("random")
        box.setAccessibleName(spec.label)
        box.setToolTip(f"{spec.help} Range {spec.describe_range()}.")
        box.setValidator(QIntValidator(0, 2**31 - 1, box))
        label.setBuddy(box)
        box.editingFinished.connect(self._emit_change)
        layout.addWidget(label, row, 0)
        layout.addWidget(box, row, 1, 1, 2)
        return box

    def _add_choice_row(self, spec: ChoiceSpec, layout: QGridLayout, row: int) -> QComboBox:
        label = QLabel(spec.label)
        box = QComboBox()
        for value, text in spec.choices:
            box.addItem(text, value)
        box.setAccessibleName(spec.label)
        box.setToolTip(spec.help)
        label.setBuddy(box)
        box.currentIndexChanged.connect(lambda _index: self._emit_change())
        layout.addWidget(label, row, 0)
        layout.addWidget(box, row, 1, 1, 2)
        return box

    def params(self) -> SamplingParams:
        """Return the values shown, validated through the parameter declarations."""
        values: dict[str, object] = {name: row.value() for name, row in self._rows.items()}
        if self._seed_box is not None:
            values["seed"] = self._seed_box.text()
        values[STOP_AT.name] = self.stop_at_box.currentData()
        return SamplingParams.from_mapping(values)

    def set_params(self, params: SamplingParams) -> None:
        """Show `params` without emitting a change."""
        self._updating = True
        try:
            for name, row in self._rows.items():
                row.set_value(getattr(params, name))
            if self._seed_box is not None:
                self._seed_box.setText("" if params.seed is None else str(params.seed))
            self.stop_at_box.setCurrentIndex(self.stop_at_box.findData(params.stop_at))
        finally:
            self._updating = False

    def set_maximum(self, name: str, maximum: float) -> None:
        """Narrow the range of one parameter, for example max new tokens to the model's window."""
        row = self._rows[name]
        row.set_range(row.spec.minimum, min(row.spec.maximum, maximum))

    def row(self, name: str) -> ParameterRow:
        """Return the widgets of one numeric parameter."""
        return self._rows[name]

    @property
    def seed_box(self) -> QLineEdit:
        """The seed field; blank means a new random seed for each run."""
        assert self._seed_box is not None
        return self._seed_box

    def _emit_change(self) -> None:
        if not self._updating:
            self.params_changed.emit(self.params())
