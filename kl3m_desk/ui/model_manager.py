"""The model manager: every known model with its facts; switch to one or remove a download."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk.device import available_devices, choose_device, detect_hardware
from kl3m_desk.model_catalog import (
    ModelEntry,
    format_parameters,
    format_size,
    list_models,
    remove_model,
)
from kl3m_desk.settings import Settings

COLUMNS = (
    "Name",
    "Source",
    "Architecture",
    "Parameters",
    "Size",
    "Weights",
    "License",
    "SHA-256",
    "Status",
)


class ModelManagerDialog(QDialog):
    """Lists models; Load switches the window to the selected one without a restart."""

    # folder of the model to load
    model_chosen = Signal(Path)
    # the device or precision override changed; the window reloads the current model
    placement_changed = Signal()
    # other settings changed (a removed model was forgotten); the window saves them
    settings_changed = Signal()

    def __init__(
        self, settings: Settings, current: Path | None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(1100, 380)
        self.settings = settings
        self.current = current
        self.entries: list[ModelEntry] = []

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAccessibleName("Models")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.empty_label = QLabel("No models yet. Add a model folder or download kl3m-002-520m.")

        self.load_button = QPushButton("Load")
        self.add_button = QPushButton("Add Folder…")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Delete a model that kl3m-desk downloaded or imported")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.load_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.add_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.remove_button, QDialogButtonBox.ButtonRole.DestructiveRole)
        buttons.rejected.connect(self.reject)

        self.facts = detect_hardware()
        self.device_box = QComboBox()
        self.device_box.setAccessibleName("Device")
        self.precision_box = QComboBox()
        self.precision_box.setAccessibleName("Precision")
        self.precision_box.addItem("Fast", "fast")
        self.precision_box.addItem("Exact", "exact")
        self.precision_box.setToolTip(
            "Fast: the quickest computation this machine offers, bfloat16 where the processor "
            "has it, checked against float32.\nExact: float32, the reference computation, "
            "about half as fast."
        )
        self.placement_label = QLabel()
        self.placement_label.setWordWrap(True)
        placement = QHBoxLayout()
        placement.addWidget(QLabel("Device:"))
        placement.addWidget(self.device_box)
        placement.addWidget(QLabel("Precision:"))
        placement.addWidget(self.precision_box)
        placement.addWidget(self.placement_label, 1)
        self._fill_placement()

        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty_label)
        layout.addLayout(placement)
        layout.addWidget(buttons)

        self.load_button.clicked.connect(self.load_selected)
        self.add_button.clicked.connect(self.add_folder)
        self.remove_button.clicked.connect(self.remove_selected)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.load_selected())
        self.device_box.currentIndexChanged.connect(self._placement_edited)
        self.precision_box.currentIndexChanged.connect(self._placement_edited)
        self.refresh()

    def refresh(self) -> None:
        """Read the known models again and show them."""
        self.entries = list_models(self.settings)
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            status = entry.problem or ("loaded" if entry.folder == self.current else "ready")
            values = (
                entry.name,
                entry.source.value,
                entry.architecture,
                format_parameters(entry.parameter_count),
                format_size(entry.size_bytes),
                ", ".join(entry.dtypes) or "unknown",
                entry.license,
                entry.sha256[:12] + "…" if len(entry.sha256) == 64 else entry.sha256,
                status,
            )
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(f"{entry.folder}\nSHA-256: {entry.sha256}\n{entry.problem}".strip())
                self.table.setItem(row, column, item)
        self._align_numbers()
        self.empty_label.setVisible(not self.entries)
        if self.entries:
            self.table.selectRow(0)
        self._update_buttons()

    def _align_numbers(self) -> None:
        for row in range(self.table.rowCount()):
            for column in (COLUMNS.index("Parameters"), COLUMNS.index("Size")):
                item = self.table.item(row, column)
                if item is not None:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )

    def selected(self) -> ModelEntry | None:
        """Return the selected model, if any."""
        rows = self.table.selectionModel().selectedRows()
        return self.entries[rows[0].row()] if rows else None

    def load_selected(self) -> None:
        """Ask the window to load the selected model and close."""
        entry = self.selected()
        if entry is not None and not entry.problem:
            self.model_chosen.emit(entry.folder)
            self.accept()

    def add_folder(self) -> None:
        """Add a model folder the user picks, and load it."""
        folder = QFileDialog.getExistingDirectory(self, "Choose model folder", str(Path.home()))
        if folder:
            self.model_chosen.emit(Path(folder))
            self.accept()

    def remove_selected(self) -> None:
        """Delete the selected downloaded or imported model after asking."""
        entry = self.selected()
        if entry is None or not entry.removable or entry.folder == self.current:
            return
        if not self.confirm_removal(entry):
            return
        try:
            remove_model(entry)
        except (OSError, ValueError) as error:
            QMessageBox.warning(self, "Models", f"{entry.name} could not be removed: {error}")
        else:
            self.settings.forget_model_dir(entry.folder)
            self.settings_changed.emit()
        self.refresh()

    def confirm_removal(self, entry: ModelEntry) -> bool:
        """Ask before deleting a model folder."""
        answer = QMessageBox.question(
            self,
            "Remove model",
            f"Delete {entry.name} ({format_size(entry.size_bytes)}) from {entry.folder}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _fill_placement(self) -> None:
        """Offer "auto" and this machine's devices, and the Fast and Exact precisions."""
        self.device_box.blockSignals(True)
        self.precision_box.blockSignals(True)
        self.device_box.clear()
        self.device_box.addItems(["auto", *available_devices(self.facts)])
        device = (
            self.settings.device if self.device_box.findText(self.settings.device) >= 0 else "auto"
        )
        self.device_box.setCurrentText(device)
        index = self.precision_box.findData(self.settings.precision)
        self.precision_box.setCurrentIndex(max(0, index))
        self.device_box.blockSignals(False)
        self.precision_box.blockSignals(False)
        dtype = "float32" if self.settings.precision == "exact" else "auto"
        try:
            self.placement_label.setText(choose_device(self.facts, device, dtype).reason)
        except ValueError as error:
            self.placement_label.setText(str(error))

    def _placement_edited(self) -> None:
        device = self.device_box.currentText()
        precision = str(self.precision_box.currentData())
        if (device, precision) == (self.settings.device, self.settings.precision):
            return
        self.settings.device, self.settings.precision = device, precision
        self._fill_placement()
        self.placement_changed.emit()

    def _update_buttons(self) -> None:
        entry = self.selected()
        self.load_button.setEnabled(entry is not None and not entry.problem)
        self.remove_button.setEnabled(
            entry is not None and entry.removable and entry.folder != self.current
        )
        if entry is not None and entry.folder == self.current:
            self.remove_button.setToolTip("The loaded model cannot be removed; load another first.")
        else:
            self.remove_button.setToolTip("Delete a model that kl3m-desk downloaded or imported")
