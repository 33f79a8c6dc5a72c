"""The model's context: the context view, the pin commands and the context label.

`ContextView` owns the actions Show Model Context, Pin Selection and Unpin All Passages, the
pinned passages of the editor (`PinnedPassages`) and the status bar label that counts the tokens
of the model's window. While Show Model Context is on, the text inside the window for the
cursor's position is highlighted.

The view builds the window with `build_prompt_with_pins`, the function the inference thread
uses, with the same pinned passages, max new tokens and anchor (`InferenceController.anchor`), so
it shows the window that the next Generate uses. It runs on the GUI thread a short pause after
the last edit or cursor move. It tokenizes only the end of the text that a window can hold, and
pinned passages it has not tokenized before, never the whole document.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from kl3m_desk.context import build_prompt_with_pins, describe_prompt, pin_overflow_message
from kl3m_desk.generation import Prompt
from kl3m_desk.review import OffsetMap
from kl3m_desk.ui.editor import DraftEditor, document_text
from kl3m_desk.ui.highlights import CONTEXT_LAYER, HighlightLayers, background_selection
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.message_bar import MessageBar, Topic
from kl3m_desk.ui.parameters_panel import ParametersPanel
from kl3m_desk.ui.pins import PinnedPassages, TrackedPin

log = logging.getLogger(__name__)

# Milliseconds without edits or cursor moves before the context view is computed again.
CONTEXT_VIEW_DELAY_MS = 250

# Green, translucent: distinct from pinned passages (amber) and review marks (the palette's
# highlight colour).
CONTEXT_COLOR = QColor(46, 160, 67, 40)

# The pin action's text, which names what it does at the cursor or selection.
PIN_TEXT = "Pin Se&lection"
UNPIN_TEXT = "Unpin Passag&e"

CONTEXT_TOOLTIP = (
    "The model sees the pinned passages and the text nearest the cursor. A new window takes up "
    "to the model's positions minus max new tokens, and stays in place while you write on, so "
    "that Generate computes only what changed. Show Model Context (Ctrl+Shift+K) highlights it."
)


class ContextView(QObject):
    """The context view and the pin commands of the window's editor.

    It sets `controller.pin_source`, so that every prompt the inference thread builds contains
    the editor's pinned passages.
    """

    def __init__(
        self,
        window: QWidget,
        editor: DraftEditor,
        controller: InferenceController,
        message_bar: MessageBar,
        status_bar: QStatusBar,
        parameters: ParametersPanel,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.editor = editor
        self.controller = controller
        self.message_bar = message_bar
        self.status_bar = status_bar
        self.parameters = parameters
        self.pins = PinnedPassages(editor)
        self.prompt: Prompt | None = None  # the window the label shows
        controller.pin_source = self.pins.snapshot

        self.label = QLabel()
        self.label.setAccessibleName("Model context")
        self.label.setToolTip(CONTEXT_TOOLTIP)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(CONTEXT_VIEW_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        self._create_actions()

        editor.cursorPositionChanged.connect(self._cursor_moved)
        editor.selectionChanged.connect(self._update_actions)
        editor.document().contentsChanged.connect(self.schedule)
        self.pins.changed.connect(self._pins_changed)
        parameters.params_changed.connect(lambda _params: self.schedule())
        controller.model_ready.connect(lambda _loaded: self.schedule())
        controller.anchor_changed.connect(lambda _anchor: self.schedule())
        self._update_actions()

    def _create_actions(self) -> None:
        def action(text: str, slot: object, shortcut: str | None, tip: str) -> QAction:
            created = QAction(text, self.window)
            if shortcut is not None:
                created.setShortcut(QKeySequence(shortcut))
                tip = f"{tip} ({shortcut})"
            created.setStatusTip(tip)
            created.setToolTip(tip)
            created.triggered.connect(slot)
            return created

        self.show_action = action(
            "Show Model Conte&xt",
            self._show_toggled,
            "Ctrl+Shift+K",
            "Highlight the text the model sees for the cursor's position and count its tokens",
        )
        self.show_action.setCheckable(True)
        self.pin_action = action(
            PIN_TEXT,
            self.toggle_pin,
            "Ctrl+Shift+P",
            "Put the selected text into every prompt, or unpin the pinned passage at the cursor",
        )
        self.unpin_all_action = action(
            "Unpin All Passages",
            self.unpin_all,
            "Ctrl+Alt+Shift+P",
            "Stop putting pinned passages into every prompt",
        )

    @property
    def actions(self) -> tuple[QAction, ...]:
        """The actions of the Draft menu, in menu order."""
        return (self.show_action, self.pin_action, self.unpin_all_action)

    @property
    def showing(self) -> bool:
        """True while Show Model Context is on."""
        return self.show_action.isChecked()

    # --- the view ---------------------------------------------------------------------------

    def schedule(self) -> None:
        """Compute the view again after a short pause, restarting the pause on every call."""
        if self.showing:
            self._timer.start()

    def refresh(self) -> None:
        """Compute the window for the cursor's position now and show its token counts.

        The window's text is highlighted while the view is on.
        """
        self._timer.stop()
        loaded = self.controller.model
        if loaded is None or self.controller.is_loading:
            self._highlight((), None)
            return
        text = document_text(self.editor.document())
        offsets = OffsetMap(text)
        cursor = offsets.to_code_point(self.editor.textCursor().position())
        # NOTE: the inference thread also passes the previous prompt and completion as history,
        # which keeps the model's own tokens for an accepted completion. The view tokenizes that
        # text afresh, so its token count can differ from Generate's by a few tokens, although
        # the highlighted text is the same.
        prompt = build_prompt_with_pins(
            loaded,
            text[:cursor],
            self.parameters.params().max_new_tokens,
            self.controller.anchor,
            (),
            self.pins.snapshot(text, offsets),
        )
        self.show_prompt(prompt)
        self._highlight(prompt.spans if self.showing else (), offsets)

    def show_prompt(self, prompt: Prompt) -> None:
        """Show the token counts of `prompt`, and a message when pinned passages were left out."""
        self.prompt = prompt
        text = describe_prompt(prompt)
        self.label.setText(text)
        self.label.setAccessibleDescription(text)
        message = pin_overflow_message(prompt)
        if message:
            self.message_bar.show_message(Topic.CONTEXT, message, self.unpin_all_action)
        else:
            self.message_bar.clear(Topic.CONTEXT)

    def _highlight(self, spans: tuple[tuple[int, int], ...], offsets: OffsetMap | None) -> None:
        """Highlight `spans`, code point ranges that `offsets` converts to Qt positions."""
        selections = []
        if spans and offsets is not None:
            document = self.editor.document()
            for start, end in spans:
                selections.append(
                    background_selection(
                        document, offsets.to_utf16(start), offsets.to_utf16(end), CONTEXT_COLOR
                    )
                )
        HighlightLayers.of(self.editor).set_layer(CONTEXT_LAYER, selections)

    def _show_toggled(self, checked: bool) -> None:
        if checked:
            self.refresh()
            if self.controller.model is None:
                self.status_bar.showMessage(
                    "The model context is shown once a model is loaded", 5000
                )
        else:
            self._timer.stop()
            self._highlight((), None)

    # --- pinning ----------------------------------------------------------------------------

    def toggle_pin(self) -> None:
        """Pin the selected text, or unpin the pinned passage at the cursor or selection."""
        cursor = self.editor.textCursor()
        if cursor.hasSelection():
            start, end = cursor.selectionStart(), cursor.selectionEnd()
            inside = self.pins.pin_containing(start, end)
            if inside is not None:
                self._unpin(inside)
                return
            if not cursor.selectedText().strip():
                self.status_bar.showMessage(
                    "The selection is only white space. Select the text to pin.", 6000
                )
                return
            pinned = self.pins.pin(start, end)
            self._report(
                f"Pinned {self.pins.describe(pinned)}. Every prompt now contains it ahead of the "
                "text before the cursor."
            )
            return
        at_cursor = self.pins.pin_at(cursor.position())
        if at_cursor is not None:
            self._unpin(at_cursor)
            return
        self.status_bar.showMessage(
            "Select the text to pin, such as the definitions section, then press Ctrl+Shift+P.",
            6000,
        )

    def unpin_all(self) -> None:
        """Unpin every pinned passage."""
        count = self.pins.clear()
        noun = "passage" if count == 1 else "passages"
        self._report(f"Unpinned {count} {noun}")

    def _unpin(self, pin: TrackedPin) -> None:
        where = self.pins.describe(pin)
        self.pins.unpin(pin)
        self._report(f"Unpinned {where}")

    def _report(self, message: str) -> None:
        """Show `message`, and the tokens of the window now that the pins changed."""
        self.status_bar.showMessage(message, 8000)
        self.refresh()

    def _cursor_moved(self) -> None:
        self._update_actions()
        self.schedule()

    def _pins_changed(self) -> None:
        self._update_actions()
        self.schedule()

    def _update_actions(self) -> None:
        cursor = self.editor.textCursor()
        if cursor.hasSelection():
            on_pin = self.pins.pin_containing(cursor.selectionStart(), cursor.selectionEnd())
        else:
            on_pin = self.pins.pin_at(cursor.position())
        self.pin_action.setText(UNPIN_TEXT if on_pin is not None else PIN_TEXT)
        self.unpin_all_action.setEnabled(bool(self.pins.pins()))
