"""The Alternatives panel: several completions of one prompt, side by side, one to insert.

`AlternativesPanel` shows one read-only card per alternative, filled piece by piece as the
inference thread streams them. One card is chosen at a time (Alt+] and Alt+[ cycle, a click
chooses), and the window inserts the chosen text where the alternatives were requested.
More adds cards and keeps the earlier ones. The panel contains no model logic: the window
sends the requests and feeds the panel.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QMouseEvent, QTextCursor
from PySide6.QtWidgets import (
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.params import SamplingParams
from kl3m_desk.ui.accessibility import announce
from kl3m_desk.ui.editor import DraftEditor, StreamInsertion, text_before
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.review_commands import ReviewCommands

DEFAULT_COUNT = 3  # as the model card's example generates
MAX_COUNT = 8
CARD_WIDTH = 300


@dataclass
class Alternative:
    """One alternative: its text so far and, once it has finished, its result."""

    text: str = ""
    result: GenerationResult | None = None


class _Card(QFrame):
    """One alternative's text with a heading; a click chooses it."""

    clicked = Signal()

    def __init__(self, number: int) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumWidth(CARD_WIDTH)
        self.heading = QLabel(f"Alternative {number}")
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setAccessibleName(f"Alternative {number}")
        self.view.viewport().installEventFilter(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.heading)
        layout.addWidget(self.view, 1)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit()
        super().mousePressEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # A click into the text chooses the card too; the view still gets the click.
        if event.type() == QEvent.Type.MouseButtonPress:
            self.clicked.emit()
        return False

    def set_chosen(self, chosen: bool) -> None:
        self.setLineWidth(3 if chosen else 1)
        self.setFrameShadow(QFrame.Shadow.Sunken if chosen else QFrame.Shadow.Plain)
        self.setStyleSheet("_Card { border: 2px solid palette(highlight); }" if chosen else "")


class AlternativesPanel(QWidget):
    """Cards of alternative completions, the count to request and the panel's buttons."""

    insert_requested = Signal()  # the user wants the chosen alternative in the document
    regenerate_requested = Signal()  # the user wants more alternatives of the same prompt
    generate_requested = Signal()  # the user wants alternatives at the cursor

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alternatives: list[Alternative] = []
        self.chosen = -1
        self._cards: list[_Card] = []
        self._first_of_request = 0  # index of the first card of the request that is streaming

        self.count_box = QSpinBox()
        self.count_box.setRange(1, MAX_COUNT)
        self.count_box.setValue(DEFAULT_COUNT)
        self.count_box.setAccessibleName("Number of alternatives")
        self.count_box.setToolTip("How many completions one request generates")
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate alternatives at the cursor (Ctrl+Shift+G)")
        self.regenerate_button = QPushButton("More")
        self.regenerate_button.setToolTip(
            "Generate more alternatives of the same prompt and keep these"
        )
        self.insert_button = QPushButton("Insert")
        self.insert_button.setToolTip("Insert the chosen alternative (Alt+Enter)")
        self.status = QLabel("No alternatives yet. Press Generate.")
        self.status.setAccessibleName("Alternatives status")

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Alternatives:"))
        controls.addWidget(self.count_box)
        controls.addWidget(self.generate_button)
        controls.addWidget(self.regenerate_button)
        controls.addWidget(self.insert_button)
        controls.addWidget(self.status, 1)

        self._row = QHBoxLayout()
        self._row.addStretch(1)
        strip = QWidget()
        strip.setLayout(self._row)
        self.cards_area = QScrollArea()
        self.cards_area.setWidgetResizable(True)
        self.cards_area.setWidget(strip)
        self.cards_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addWidget(self.cards_area, 1)

        self.generate_button.clicked.connect(self.generate_requested)
        self.regenerate_button.clicked.connect(self.regenerate_requested)
        self.insert_button.clicked.connect(self.insert_requested)
        self.set_busy(False)

    # --- feeding the panel ----------------------------------------------------------------

    def clear(self) -> None:
        """Remove every card, for a request at a new place."""
        for card in self._cards:
            self._row.removeWidget(card)
            card.deleteLater()
        self._cards.clear()
        self.alternatives.clear()
        self.chosen = -1
        self.status.setText("No alternatives yet. Press Generate.")
        self._update_buttons()

    def start_request(self, count: int) -> None:
        """Add `count` empty cards for a request whose pieces are about to arrive."""
        self._first_of_request = len(self.alternatives)
        for _ in range(count):
            self.alternatives.append(Alternative())
            card = _Card(len(self.alternatives))
            index = len(self._cards)
            card.clicked.connect(lambda index=index: self.choose(index))
            self._cards.append(card)
            self._row.insertWidget(self._row.count() - 1, card)
        self.status.setText(f"Generating {count} alternatives…")
        self.set_busy(True)
        self.choose(self._first_of_request)

    def add_text(self, index: int, piece: str) -> None:
        """Append `piece` to alternative `index` of the current request."""
        position = self._first_of_request + index
        if not 0 <= position < len(self.alternatives):
            return
        self.alternatives[position].text += piece
        view = self._cards[position].view
        view.moveCursor(view.textCursor().MoveOperation.End)
        view.insertPlainText(piece)

    def finish_one(self, index: int, result: GenerationResult) -> None:
        """Record the result of alternative `index` of the current request."""
        position = self._first_of_request + index
        if not 0 <= position < len(self.alternatives):
            return
        self.alternatives[position].result = result
        self._cards[position].heading.setText(
            f"Alternative {position + 1} · seed {result.seed} · {len(result.token_ids)} tokens"
        )

    def finish_request(self, results: list[GenerationResult]) -> None:
        """Drop cards of the request that never started (after a stop) and show the ready status."""
        started = self._first_of_request + len(results)
        while len(self.alternatives) > started:
            self.alternatives.pop()
            card = self._cards.pop()
            self._row.removeWidget(card)
            card.deleteLater()
        self.chosen = min(self.chosen, len(self.alternatives) - 1)
        for index, card in enumerate(self._cards):
            card.set_chosen(index == self.chosen)
        self.status.setText(
            f"{len(self.alternatives)} alternatives. Alt+] and Alt+[ choose one, "
            "Alt+Enter inserts it."
        )
        self.set_busy(False)

    def set_busy(self, busy: bool) -> None:
        """Disable the buttons that would start or insert while a request runs."""
        self._busy = busy
        self._update_buttons()

    # --- choosing -------------------------------------------------------------------------

    def choose(self, index: int) -> None:
        """Make alternative `index` the chosen one and scroll it into view."""
        if not 0 <= index < len(self._cards):
            return
        self.chosen = index
        for position, card in enumerate(self._cards):
            card.set_chosen(position == index)
        self.cards_area.ensureWidgetVisible(self._cards[index])
        self._update_buttons()

    def choose_next(self) -> None:
        """Choose the next alternative, wrapping around after the last."""
        if self._cards:
            self.choose((self.chosen + 1) % len(self._cards))

    def choose_previous(self) -> None:
        """Choose the previous alternative, wrapping around before the first."""
        if self._cards:
            self.choose((self.chosen - 1) % len(self._cards))

    def chosen_alternative(self) -> Alternative | None:
        """Return the chosen alternative once it has finished, else None."""
        if 0 <= self.chosen < len(self.alternatives):
            alternative = self.alternatives[self.chosen]
            if alternative.result is not None:
                return alternative
        return None

    def _update_buttons(self) -> None:
        busy = getattr(self, "_busy", False)
        self.generate_button.setEnabled(not busy)
        self.regenerate_button.setEnabled(not busy and bool(self.alternatives))
        self.insert_button.setEnabled(not busy and self.chosen_alternative() is not None)


class AlternativesCommands(QObject):
    """The window's side of alternatives: its actions, its dock and the insertion of a choice.

    The prompt is the text before the cursor when Generate Alternatives was chosen, and the
    chosen text goes to that spot, which follows later edits. An inserted alternative is one undo
    step and gets a review mark and record like any completion.
    """

    def __init__(
        self,
        window: QMainWindow,
        editor: DraftEditor,
        controller: InferenceController,
        review: ReviewCommands,
        params: Callable[[], SamplingParams],
    ) -> None:
        super().__init__(window)
        self.window = window
        self.editor = editor
        self.controller = controller
        self.review = review
        self._params = params
        self.panel = AlternativesPanel()
        self.dock = QDockWidget("Alternatives", window)
        self.dock.setObjectName("alternativesDock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.dock)
        self.dock.hide()

        self.pending = False  # an alternatives request runs on the inference thread
        self._spot: QTextCursor | None = None  # where the chosen alternative goes
        self._text_before = ""  # the prompt's text, for the review record
        self._request_params: SamplingParams | None = None
        self._prompt: Prompt | None = None

        def action(text: str, slot: Callable[[], None], shortcut: str, tip: str) -> QAction:
            created = QAction(text, window)
            created.setShortcut(QKeySequence(shortcut))
            created.setToolTip(tip)
            created.setStatusTip(tip)
            created.triggered.connect(slot)
            window.addAction(created)
            return created

        self.generate_action = action(
            "Generate &Alternatives",
            self.generate,
            "Ctrl+Shift+G",
            "Generate several completions at the cursor to choose from (Ctrl+Shift+G)",
        )
        self.next_action = action(
            "Next Alternative", self.panel.choose_next, "Alt+]", "Choose the next alternative"
        )
        self.previous_action = action(
            "Previous Alternative",
            self.panel.choose_previous,
            "Alt+[",
            "Choose the previous alternative",
        )
        self.insert_action = action(
            "&Insert Alternative",
            self.insert_chosen,
            "Alt+Return",
            "Insert the chosen alternative where it was requested (Alt+Enter)",
        )
        self.panel.generate_requested.connect(self.generate)
        self.panel.regenerate_requested.connect(self.regenerate)
        self.panel.insert_requested.connect(self.insert_chosen)
        controller.generation_started.connect(self._started)
        controller.alternative_text.connect(self.panel.add_text)
        controller.alternative_finished.connect(self.panel.finish_one)
        controller.alternatives_finished.connect(self._finished)

    @property
    def actions(self) -> tuple[QAction, ...]:
        """The actions for the Draft menu."""
        return (self.generate_action, self.next_action, self.previous_action, self.insert_action)

    def set_ready(self, ready: bool) -> None:
        """Enable the actions that need a loaded model."""
        self.generate_action.setEnabled(ready)
        self.panel.generate_button.setEnabled(ready and not self.pending)

    def generate(self) -> None:
        """Request alternatives at the cursor, replacing the cards of an earlier spot."""
        if self.controller.model is None or self.controller.is_loading:
            return
        position = self.editor.textCursor().position()
        self._spot = QTextCursor(self.editor.document())
        self._spot.setPosition(position)
        self._text_before = text_before(self.editor.document(), position)
        params = self._params()
        if params.seed is None:
            params = params.replace(seed=secrets.randbelow(2**32))
        self._request_params = params
        self.panel.clear()
        self._request(params)

    def regenerate(self) -> None:
        """Request more alternatives of the same prompt, keeping the earlier ones."""
        if self._request_params is None or self._spot is None:
            self.generate()
            return
        base = self._request_params.seed or 0
        params = self._params().replace(seed=(base + len(self.panel.alternatives)) % 2**32)
        self._request(params)

    def _request(self, params: SamplingParams) -> None:
        count = self.panel.count_box.value()
        self.pending = True
        self.controller.cancel_prefill()
        if not self.dock.isVisible():
            self.dock.show()
            # A new bottom dock gets its minimum height, a line or two per card. Give it about
            # a third of the window so each alternative shows several lines.
            height = max(self.dock.minimumSizeHint().height(), self.window.height() // 3)
            self.window.resizeDocks([self.dock], [height], Qt.Orientation.Vertical)
        self.panel.start_request(count)
        self.controller.generate_alternatives(self._text_before, params, count)

    def _started(self, prompt: Prompt) -> None:
        if self.pending:
            self._prompt = prompt

    def _finished(self, results: list[GenerationResult]) -> None:
        self.pending = False
        self.panel.finish_request(results)
        announce(self.editor, f"{len(results)} alternatives ready")

    def abandon(self) -> None:
        """Give up a running request that a new completion replaces, dropping its cards."""
        if self.pending:
            self.request_failed()

    def request_failed(self) -> None:
        """Return the panel to its idle state after a failed request."""
        self.pending = False
        self.panel.finish_request([])

    def insert_chosen(self) -> None:
        """Insert the chosen alternative at its spot as one undo step, with a review mark."""
        alternative = self.panel.chosen_alternative()
        model = self.controller.model
        if alternative is None or self._spot is None or model is None or self.pending:
            return
        result = alternative.result
        assert result is not None
        assert self._request_params is not None
        params = self._request_params.replace(seed=result.seed)
        self.review.begin(self._text_before, params, model)
        self.review.prompt_ready(result.prompt)
        insertion = StreamInsertion(self.editor.document(), self._spot.position())
        before = insertion.position
        insertion.insert(alternative.text)
        self.review.text_inserted(alternative.text, before, insertion.position)
        self.review.result_ready(result)
        before = insertion.position
        insertion.finish()
        self.review.text_inserted("", before, insertion.position)
        self.review.end_stream()
        self.panel.status.setText(f"Inserted alternative {self.panel.chosen + 1}.")
