"""An inline notice above the editor for problems that must not block the window."""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class Topic(Enum):
    """Subject of a message. A new message replaces an older one of the same topic."""

    MODEL = "model"
    GENERATION = "generation"
    DOCUMENT = "document"
    FORMAT = "format"  # what a file's format could not keep, or the encoding a file was read in
    SETTINGS = "settings"
    CONTEXT = "context"  # pinned passages that do not fit the model's window
    NOTICE = "notice"  # information to read once, such as the model's limitations


class MessageBar(QFrame):
    """Shows the current message of each topic, newest last, until it is cleared or dismissed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.setStyleSheet(
            "#messageBar { background: #fdecea; border: 1px solid #f5c2c0; border-radius: 4px; }"
        )
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.action_button.clicked.connect(self._trigger_action)
        dismiss_button = QPushButton("Dismiss")
        dismiss_button.clicked.connect(lambda: self.clear())
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(dismiss_button)
        self._messages: dict[Topic, tuple[str, QAction | None]] = {}
        self._refresh()

    def show_message(self, topic: Topic, text: str, action: QAction | None = None) -> None:
        """Show `text` for `topic`, with a button for `action` when one is given."""
        self._messages.pop(topic, None)
        self._messages[topic] = (text, action)
        self._refresh()

    def clear(self, topic: Topic | None = None) -> None:
        """Remove the message of `topic`, or every message when no topic is given."""
        if topic is None:
            self._messages.clear()
        else:
            self._messages.pop(topic, None)
        self._refresh()

    def messages(self) -> list[str]:
        """Return the texts shown, oldest first."""
        return [text for text, _action in self._messages.values()]

    def _current_action(self) -> QAction | None:
        actions = [action for _text, action in self._messages.values() if action is not None]
        return actions[-1] if actions else None

    def _refresh(self) -> None:
        self.label.setText("\n\n".join(self.messages()))
        action = self._current_action()
        if action is not None:
            self.action_button.setText(action.text().replace("&", "").rstrip("…."))
        self.action_button.setVisible(action is not None)
        self.setVisible(bool(self._messages))

    def _trigger_action(self) -> None:
        action = self._current_action()
        if action is not None:
            action.trigger()
