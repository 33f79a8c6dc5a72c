"""Messages for screen readers.

`announce` makes a screen reader read a short message once, for example when a completion has
finished, instead of reading every streamed token as it arrives.
"""

from __future__ import annotations

from PySide6.QtGui import QAccessible, QAccessibleAnnouncementEvent
from PySide6.QtWidgets import QWidget


def announce(widget: QWidget, message: str) -> None:
    """Have screen readers read `message` once, and keep it as `widget`'s accessible description.

    The description lets a screen reader user find the message again after it was read.
    """
    widget.setAccessibleDescription(message)
    QAccessible.updateAccessibility(QAccessibleAnnouncementEvent(widget, message))
