"""Ghost text: a suggestion drawn in grey after a position in the editor, outside its document.

`GhostText` paints through `DraftEditor.add_overlay_painter`, on top of what the editor drew. It
never calls a method that edits the QTextDocument, so the document's text, revision and undo stack
stay as they are while a suggestion shows.

The first line starts at the anchor's cursor rectangle and ends at the right edge of the text
area. Further lines start at the left edge of the text, one line below the other, wrapped at word
boundaries as the editor wraps its own text. When the first word does not fit after the anchor,
the suggestion starts on the next line, without the spaces before that word. Each line is drawn
on a faint tint of the selection colour with a bar at its left edge, so document text under it
is hidden while the suggestion shows, and the covered area reads as a preview rather than as
deleted text. That is the rest of the anchor's line, and the lines below when the anchor is not
at the end of the document.

NOTE: Lines that fall below the viewport are not shown, because the editor scrolls no further than
the document's last line.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import (
    QColor,
    QFontMetricsF,
    QPainter,
    QPalette,
    QTextCursor,
    QTextLayout,
    QTextOption,
)

from kl3m_desk.ui.editor import DraftEditor, to_document_newlines

_LINE_SEPARATOR = "\u2028"  # QTextLayout breaks the line here, as the editor does for "\n"
# Spaces and tabs at the start of the text, then its first word: what must fit after the anchor.
_FIRST_WORD = re.compile(r"[^\S\n]*[^\s]*")


class GhostText:
    """Grey text after one position of the editor, drawn over the text but never inserted."""

    def __init__(self, editor: DraftEditor) -> None:
        self.editor = editor
        self._anchor = QTextCursor(editor.document())
        self._text = ""
        self._visible = False
        editor.add_overlay_painter(self.paint)

    @property
    def text(self) -> str:
        """The text shown, with "\\n" line breaks, or "" while hidden."""
        return self._text if self._visible else ""

    @property
    def visible(self) -> bool:
        """True while the ghost text is drawn."""
        return self._visible

    @property
    def color(self) -> QColor:
        """Colour of the ghost text: the editor's placeholder text colour."""
        return self.editor.palette().color(QPalette.ColorRole.PlaceholderText)

    def show(self, position: int, text: str) -> None:
        """Draw `text` after document position `position`, replacing what was shown before."""
        text = to_document_newlines(text)
        if self._visible and text == self._text and position == self._anchor.position():
            return
        self._anchor.setPosition(position)
        self._text = text
        self._visible = bool(text)
        self.editor.viewport().update()

    def hide(self) -> None:
        """Stop drawing the ghost text."""
        if self._visible:
            self._visible = False
            self.editor.viewport().update()

    def line_rects(self) -> list[QRectF]:
        """Return the rectangle of each drawn line in viewport coordinates, [] while hidden.

        A rectangle spans from the line's start to the right edge of the text area, which is
        the part painted over.
        """
        if not self._visible:
            return []
        return self._layout()[1]

    def paint(self, painter: QPainter) -> None:
        """Draw the ghost text with `painter`, which paints on the editor's viewport."""
        if not self._visible:
            return
        layout, rects = self._layout()
        palette = self.editor.palette()
        background = _blend(
            palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Highlight)
        )
        for rect in rects:
            painter.fillRect(rect, background)
            painter.fillRect(QRectF(rect.left(), rect.top(), 2.0, rect.height()), self.color)
        painter.save()
        painter.setPen(self.color)
        layout.draw(painter, QPointF(0, 0))
        painter.restore()

    def _layout(self) -> tuple[QTextLayout, list[QRectF]]:
        """Lay the text out from the anchor, and return the layout and each line's rectangle."""
        editor = self.editor
        margin = editor.document().documentMargin()
        left = editor.contentOffset().x() + margin
        right = max(left + 1.0, editor.viewport().width() - margin)
        caret = editor.cursorRect(self._anchor)
        font = editor.document().defaultFont()
        metrics = QFontMetricsF(font)

        text = self._text
        x = float(caret.left() + editor.cursorWidth())
        y = float(caret.top())
        first_word = _FIRST_WORD.match(text)
        if x > left and first_word and metrics.horizontalAdvance(first_word.group()) > right - x:
            # Start on the next line, without the spaces that would indent it.
            x, y = left, y + metrics.lineSpacing()
            text = text.lstrip(" \t")

        option = QTextOption()
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        option.setTabStopDistance(editor.tabStopDistance())
        layout = QTextLayout(text.replace("\n", _LINE_SEPARATOR), font)
        layout.setTextOption(option)

        rects = []
        layout.beginLayout()
        while True:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(max(1.0, right - x))
            line.setPosition(QPointF(x, y))
            rects.append(QRectF(x, y, max(0.0, right - x), line.height()))
            y += line.height()
            x = left
        layout.endLayout()
        return layout, rects


def _blend(base: QColor, accent: QColor, share: float = 0.08) -> QColor:
    """Return `base` with `share` of `accent` mixed in, an opaque tint for the covered lines."""
    return QColor.fromRgbF(
        base.redF() + (accent.redF() - base.redF()) * share,
        base.greenF() + (accent.greenF() - base.greenF()) * share,
        base.blueF() + (accent.blueF() - base.blueF()) * share,
    )
