"""The recovery prompt shown at start-up when documents with unsaved changes were left behind.

`RecoveryDialog` lists each journal (see kl3m_desk.journal) with the document's name, folder,
when its file was last saved and when it was last autosaved. Recover opens the checked documents,
Not Now keeps every journal for the next start, and Discard deletes the checked journals after
asking. `offer_recovery` runs the dialog and carries out the choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk import APP_NAME
from kl3m_desk.journal import Journal, delete_journal

log = logging.getLogger(__name__)


class RecoveryChoice(Enum):
    """The button the user chose in the recovery prompt."""

    RECOVER = "recover"
    NOT_NOW = "not now"
    DISCARD = "discard"


def describe_time(iso_time: str | None, missing: str) -> str:
    """Return an ISO 8601 time in local time for people, or `missing` when there is none."""
    if iso_time is None:
        return missing
    try:
        moment = datetime.fromisoformat(iso_time).astimezone()
    except ValueError:
        return iso_time
    return moment.strftime("%b %d, %Y, %I:%M %p").replace(" 0", " ")


class RecoveryDialog(QDialog):
    """Asks which documents with unsaved changes to recover. Every document starts checked."""

    def __init__(self, journals: list[Journal], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.journals = list(journals)
        self.choice = RecoveryChoice.NOT_NOW
        self.setWindowTitle(f"Recover Unsaved Documents — {APP_NAME}")
        heading = QLabel("<b>Unsaved documents can be recovered</b>")
        intro = QLabel(
            f"These documents had unsaved changes when {APP_NAME} stopped without closing them, "
            "for example after a crash. Recover opens the checked documents with their text and "
            "review marks, so you can save them. Not Now keeps them for the next start."
        )
        intro.setWordWrap(True)

        self.tree = QTreeWidget()
        self.tree.setRootIsDecorated(False)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setHeaderLabels(["Document", "Folder", "Last saved", "Last autosaved"])
        self.tree.setAccessibleName("Unsaved documents")
        for journal in self.journals:
            folder = str(journal.file_path.parent) if journal.file_path is not None else ""
            item = QTreeWidgetItem(
                [
                    journal.display_name,
                    folder,
                    describe_time(journal.last_saved, "never saved"),
                    describe_time(journal.journaled_at, "unknown"),
                ]
            )
            item.setCheckState(0, Qt.CheckState.Checked)
            item.setToolTip(0, f"{len(journal.text):,} characters")
            item.setToolTip(1, folder)
            self.tree.addTopLevelItem(item)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in (0, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemChanged.connect(lambda _item, _column: self._update_buttons())

        buttons = QDialogButtonBox()
        self.recover_button = QPushButton("Recover")
        self.recover_button.setDefault(True)
        self.not_now_button = QPushButton("Not Now")
        self.discard_button = QPushButton("Discard…")
        buttons.addButton(self.recover_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.not_now_button, QDialogButtonBox.ButtonRole.RejectRole)
        buttons.addButton(self.discard_button, QDialogButtonBox.ButtonRole.DestructiveRole)
        self.recover_button.clicked.connect(self._recover)
        self.not_now_button.clicked.connect(self.reject)
        self.discard_button.clicked.connect(self._discard)

        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(intro)
        layout.addWidget(self.tree, 1)
        layout.addWidget(buttons)
        self.resize(880, 300)
        self._update_buttons()

    def checked(self) -> list[Journal]:
        """Return the journals whose documents are checked, in list order."""
        return [
            journal
            for index, journal in enumerate(self.journals)
            if self.tree.topLevelItem(index).checkState(0) == Qt.CheckState.Checked  # type: ignore[union-attr]
        ]

    def set_checked(self, index: int, checked: bool) -> None:
        """Check or uncheck the document in row `index`."""
        state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        self.tree.topLevelItem(index).setCheckState(0, state)  # type: ignore[union-attr]

    def confirm_discard(self, count: int) -> bool:
        """Ask whether to delete the unsaved changes of `count` documents for good."""
        noun = "this document" if count == 1 else f"these {count} documents"
        answer = QMessageBox.warning(
            self,
            APP_NAME,
            f"Discard the unsaved changes of {noun}? They cannot be recovered afterwards.",
            QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Discard

    def _update_buttons(self) -> None:
        any_checked = bool(self.checked())
        self.recover_button.setEnabled(any_checked)
        self.discard_button.setEnabled(any_checked)

    def _recover(self) -> None:
        self.choice = RecoveryChoice.RECOVER
        self.accept()

    def _discard(self) -> None:
        if not self.confirm_discard(len(self.checked())):
            return
        self.choice = RecoveryChoice.DISCARD
        self.accept()

    def reject(self) -> None:
        self.choice = RecoveryChoice.NOT_NOW
        super().reject()


class RecoveringWindow(Protocol):
    """The part of the main window that recovery uses."""

    def open_recovered(self, journal: Journal) -> None: ...

    def is_pristine(self) -> bool: ...


def offer_recovery(
    journals: list[Journal],
    window: RecoveringWindow,
    open_window: Callable[[], RecoveringWindow],
    dialog: RecoveryDialog | None = None,
) -> list[RecoveringWindow]:
    """Ask about `journals` and recover, keep or discard them; return the windows recovered into.

    The first recovered document goes into `window` when it shows an empty untitled document,
    and each other one into a new window from `open_window`.
    """
    if not journals:
        return []
    dialog = dialog or RecoveryDialog(journals, window if isinstance(window, QWidget) else None)
    dialog.exec()
    chosen = dialog.checked()
    if dialog.choice is RecoveryChoice.NOT_NOW:
        log.info("Recovery postponed: %d journals kept", len(journals))
        return []
    if dialog.choice is RecoveryChoice.DISCARD:
        for journal in chosen:
            if journal.path is None:
                continue
            try:
                delete_journal(journal.path)
            except OSError as error:
                log.warning("Could not delete the recovery journal %s: %s", journal.path, error)
        return []
    recovered: list[RecoveringWindow] = []
    for journal in chosen:
        target = window if window.is_pristine() else open_window()
        target.open_recovered(journal)
        recovered.append(target)
    return recovered
