"""Highlights in the editor, kept in layers so that one feature never removes another's.

`QPlainTextEdit.setExtraSelections` replaces every extra selection at once. Review marks, pinned
passages and the context view therefore each set only their own layer of `HighlightLayers`, which
gives the editor all layers together in `LAYER_ORDER`. A later layer paints over an earlier one,
and translucent backgrounds blend where they overlap.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QObject
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import QPlainTextEdit, QTextEdit

CONTEXT_LAYER = "context"
PINS_LAYER = "pins"
REVIEW_LAYER = "review"
LAYER_ORDER = (CONTEXT_LAYER, PINS_LAYER, REVIEW_LAYER)


def background_selection(
    document: QTextDocument, start: int, end: int, color: QColor
) -> QTextEdit.ExtraSelection:
    """Return an extra selection that paints `color` behind Qt positions `start` to `end`."""
    selection = QTextEdit.ExtraSelection()
    cursor = QTextCursor(document)
    cursor.setPosition(start)
    cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    selection.cursor = cursor
    char_format = QTextCharFormat()
    char_format.setBackground(color)
    selection.format = char_format
    return selection


class HighlightLayers(QObject):
    """The extra selections of one editor, by layer name. Use `HighlightLayers.of(editor)`."""

    OBJECT_NAME = "highlightLayers"

    def __init__(self, editor: QPlainTextEdit) -> None:
        super().__init__(editor)
        self.setObjectName(self.OBJECT_NAME)
        self.editor = editor
        self._layers: dict[str, list[QTextEdit.ExtraSelection]] = {}

    @classmethod
    def of(cls, editor: QPlainTextEdit) -> HighlightLayers:
        """Return the layers of `editor`, created on first use as a child of the editor."""
        found = editor.findChild(cls, cls.OBJECT_NAME)
        return found if isinstance(found, cls) else cls(editor)

    def set_layer(self, name: str, selections: Iterable[QTextEdit.ExtraSelection]) -> None:
        """Replace the selections of layer `name` and show every layer in the editor."""
        self._layers[name] = list(selections)
        ordered: list[QTextEdit.ExtraSelection] = []
        for layer in sorted(self._layers, key=_rank):
            ordered.extend(self._layers[layer])
        self.editor.setExtraSelections(ordered)

    def layer(self, name: str) -> list[QTextEdit.ExtraSelection]:
        """Return the selections of layer `name`, empty when it was never set."""
        return list(self._layers.get(name, []))


def _rank(name: str) -> int:
    return LAYER_ORDER.index(name) if name in LAYER_ORDER else len(LAYER_ORDER)
