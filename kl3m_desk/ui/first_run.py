"""The first-run panel, shown while no model is loaded: download, choose or reuse a model."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk.model_catalog import ModelEntry, format_size

# Shown before the exact size is known: kl3m-002-520m's 520,193,024 float32 weights take 2.08 GB.
APPROXIMATE_MODEL_SIZE = "about 2.1 GB"
QUIET_SECONDS = 3  # seconds without download progress before the panel reports waiting


class FirstRunPanel(QFrame):
    """Explains that a model is needed and offers the three ways to get one."""

    # the user requested the download of kl3m-002-520m (the window then requests consent)
    download_requested = Signal()
    # the user asked to pick a model folder
    choose_folder_requested = Signal()
    # folder of a previously downloaded or imported model the user picked
    previous_chosen = Signal(Path)
    # the user asked to cancel the running download
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("firstRunPanel")
        self.setStyleSheet(
            "#firstRunPanel { background: #f3f6fa; border: 1px solid #c9d6e6; border-radius: 6px; }"
        )
        title = QLabel("kl3m-desk needs a language model")
        title.setStyleSheet("font-size: 15pt; font-weight: 600;")
        explanation = QLabel(
            "kl3m-desk drafts with kl3m-002-520m, a legal language model by ALEA Institute "
            "(CC BY 4.0) that runs entirely on this computer. Download it once, or choose a model "
            "folder you already have. The download is the only time kl3m-desk connects to the "
            "internet, and it starts only when you click Download."
        )
        explanation.setWordWrap(True)

        self.download_button = QPushButton(f"Download kl3m-002-520m ({APPROXIMATE_MODEL_SIZE})…")
        self.choose_button = QPushButton("Choose Model Folder…")
        self.previous_box = QComboBox()
        self.previous_box.setAccessibleName("Previous downloads")
        self.previous_button = QPushButton("Use Previous Download")
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.choose_button)
        buttons.addStretch(1)
        buttons.addWidget(self.previous_box)
        buttons.addWidget(self.previous_button)

        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel Download")
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(explanation)
        layout.addLayout(buttons)
        layout.addLayout(progress_row)
        layout.addWidget(self.status_label)

        self.download_button.clicked.connect(self.download_requested)
        self.choose_button.clicked.connect(self.choose_folder_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.previous_button.clicked.connect(self._choose_previous)
        # Progress arrives only with data, so a timer notices a connection that went quiet.
        self._last_progress = 0.0
        self._quiet_timer = QTimer(self)
        self._quiet_timer.setInterval(1000)
        self._quiet_timer.timeout.connect(self._check_quiet)
        self.set_previous([])
        self.set_downloading(False)
        self.show_status("")

    def set_previous(self, entries: list[ModelEntry]) -> None:
        """Offer the loadable models downloaded or imported earlier."""
        self.previous_box.clear()
        for entry in entries:
            if entry.removable and not entry.problem:
                label = f"{entry.name} ({format_size(entry.size_bytes)})"
                self.previous_box.addItem(label, str(entry.folder))
        has_previous = self.previous_box.count() > 0
        self.previous_box.setVisible(has_previous)
        self.previous_button.setVisible(has_previous)

    def set_downloading(self, downloading: bool) -> None:
        """Switch between the offer and the progress of a running download."""
        self.download_button.setEnabled(not downloading)
        self.choose_button.setEnabled(not downloading)
        self.previous_button.setEnabled(not downloading)
        self.progress.setVisible(downloading)
        self.cancel_button.setVisible(downloading)
        if downloading:
            self.progress.setRange(0, 0)
            self.show_status("Connecting…")
            self._last_progress = time.monotonic()
            self._quiet_timer.start()
        else:
            self._quiet_timer.stop()

    def show_progress(self, done: int, total: int, bytes_per_second: float) -> None:
        """Show bytes done of `total` and the current speed."""
        self._last_progress = time.monotonic()
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"{format_size(done)} of {format_size(total)}")
        speed = f", {format_size(int(bytes_per_second))}/s" if bytes_per_second > 0 else ""
        self.show_status(f"Downloading kl3m-002-520m{speed}")

    def show_status(self, text: str) -> None:
        """Show a line of text under the buttons, such as why a download stopped."""
        self.status_label.setText(text)
        self.status_label.setVisible(bool(text))

    def _check_quiet(self) -> None:
        quiet = time.monotonic() - self._last_progress
        if quiet >= QUIET_SECONDS:
            self.show_status(
                f"Waiting for the server: no data for {quiet:.0f} s. The download stops by itself "
                "if the connection stays silent; you can also cancel it."
            )

    def _choose_previous(self) -> None:
        folder = self.previous_box.currentData(Qt.ItemDataRole.UserRole)
        if folder:
            self.previous_chosen.emit(Path(folder))
