"""Inline suggestions: Generate shows its completion as ghost text, inserted only when accepted.

With **Draft → Inline Suggestions** on, the window's Generate (and Finish This Sentence, Finish
This Clause, and a clause template's continuation) calls `InlineSuggestions.start` instead of
streaming into the document. The completion streams into a `Suggestion`, which `GhostText` draws
after the cursor.

A suggestion is shown while the caret sits exactly where its remaining text starts, with no
selection. Only then these keys act on it, and otherwise they keep their usual meaning:

- Tab accepts all of the text that has arrived. Text still streaming after that shows as a new
  suggestion.
- The platform's next-word key (Ctrl+Right; Option+Right on macOS) accepts the next word, with
  the whitespace before it.
- Ctrl+Down (Cmd+Down on macOS) accepts the next sentence, which ends where Stop at "end of
  sentence" would end a completion.
- Esc dismisses the suggestion and stops its run.

Any change to the document made by anything else than an acceptance (typing, Backspace, paste,
Undo) dismisses the suggestion and stops its run. A typed character is never matched against the
suggestion: it dismisses the suggestion even when it equals its next character. Moving the caret
away only hides the suggestion, and it shows again when the caret comes back to its start.

Each acceptance inserts its text through `StreamInsertion` as one undo step, and gets a review
mark and a generation record like a streamed completion. Parts of one suggestion accepted one
after another (word by word, sentence by sentence) form one passage with one record, whose text is
the accepted text and whose offset is where it starts in the run's text. A part accepted after
that passage was marked reviewed starts a new passage.

With **Suggest After a Pause** on, a pause in typing of the set length starts a suggestion at the
caret. The window's prefill timer still runs after typing. When it fires before the pause ends,
the suggestion reuses the prompt it computed; when the suggestion starts first, Generate stops
that timer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QMainWindow,
    QSpinBox,
    QStatusBar,
)

from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import STOP_FAILED, GenerationRecord
from kl3m_desk.settings import Settings
from kl3m_desk.suggestion import MAX_DELAY_MS, MIN_DELAY_MS, Suggestion
from kl3m_desk.ui.accessibility import announce
from kl3m_desk.ui.editor import DraftEditor, StreamInsertion, text_before
from kl3m_desk.ui.ghost_text import GhostText
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.review_commands import ReviewCommands, plural

log = logging.getLogger(__name__)

TOGGLE_SHORTCUT = "Ctrl+Shift+I"
AUTOMATIC_SHORTCUT = "Ctrl+Alt+Shift+I"
ACCEPT_ALL_KEY = QKeySequence("Tab")
ACCEPT_WORD_KEY = QKeySequence.StandardKey.MoveToNextWord
ACCEPT_SENTENCE_KEY = QKeySequence("Ctrl+Down")
DISMISS_KEY = QKeySequence("Esc")
ANNOUNCEMENT_PREFIX = "Suggestion ready"
STATUS_TIMEOUT_MS = 8000


def key_names() -> str:
    """Return the sentence that names the keys of a shown suggestion, as this system writes them."""
    native = QKeySequence.SequenceFormat.NativeText
    word = QKeySequence(ACCEPT_WORD_KEY).toString(native)
    sentence = ACCEPT_SENTENCE_KEY.toString(native)
    return f"Tab accepts it, {word} accepts a word, {sentence} a sentence, and Esc dismisses it."


class SuggestionOptions(QGroupBox):
    """The Sampling panel's inline suggestion options, kept in step with the Draft menu."""

    def __init__(self, inline_action: QAction, automatic_action: QAction, delay_ms: int) -> None:
        super().__init__("Inline suggestions")
        self.inline_box = QCheckBox("Show completions as suggestions")
        self.inline_box.setToolTip(inline_action.toolTip())
        self.automatic_box = QCheckBox("Suggest after a pause in typing")
        self.automatic_box.setToolTip(automatic_action.toolTip())
        self.delay_box = QSpinBox()
        self.delay_box.setRange(MIN_DELAY_MS, MAX_DELAY_MS)
        self.delay_box.setSingleStep(100)
        self.delay_box.setSuffix(" ms")
        self.delay_box.setValue(delay_ms)
        self.delay_box.setAccessibleName("Pause before a suggestion")
        self.delay_box.setToolTip(
            "How long typing must pause before a suggestion starts, "
            f"{MIN_DELAY_MS} to {MAX_DELAY_MS} milliseconds."
        )
        layout = QFormLayout(self)
        layout.addRow(self.inline_box)
        layout.addRow(self.automatic_box)
        layout.addRow("Pause:", self.delay_box)

        for box, action in (
            (self.inline_box, inline_action),
            (self.automatic_box, automatic_action),
        ):
            box.setChecked(action.isChecked())
            box.setEnabled(action.isEnabled())
            box.toggled.connect(action.setChecked)
            action.toggled.connect(box.setChecked)
            action.changed.connect(
                lambda box=box, action=action: box.setEnabled(action.isEnabled())
            )


class InlineSuggestions(QObject):
    """The window's side of inline suggestions: mode, keys, ghost text and accepted text.

    Call every method from the GUI thread. The window calls `owns_latest_run` before it treats a
    generation signal as a completion streaming into the document.
    """

    # The pause in typing has passed: the window should Generate at the caret.
    generate_requested = Signal()
    # An option in `settings.suggestions` changed, so the window saves the settings.
    settings_changed = Signal()
    # A run was stopped here, so the window updates Stop and Generate.
    run_stopped = Signal()

    def __init__(
        self,
        window: QMainWindow,
        editor: DraftEditor,
        controller: InferenceController,
        review: ReviewCommands,
        status_bar: QStatusBar,
        settings: Settings,
    ) -> None:
        super().__init__(window)
        self.editor = editor
        self.controller = controller
        self.review = review
        self.status_bar = status_bar
        self.settings = settings
        self.ghost = GhostText(editor)
        self.suggestion: Suggestion | None = None
        # Where the remaining suggestion starts. Qt moves it with edits before it.
        self._anchor = QTextCursor(editor.document())
        self._job: int | None = None  # the controller's id of the suggestion's run
        self._text_before = ""  # the prompt's text, for the generation records
        self._params: SamplingParams | None = None
        self._model: LoadedModel | None = None
        self._prompt: Prompt | None = None
        self._result: GenerationResult | None = None
        # Records of accepted parts whose run has not finished. Its result completes them.
        self._waiting_records: list[GenerationRecord] = []
        self._record: GenerationRecord | None = None  # record of the latest accepted part
        self._accepting = False  # an acceptance is inserting text into the document
        self._key_pending = False  # the editor is handling a key press that passed through
        self._key_changed_text = False  # ... and that key press changed the document

        self._pause_timer = QTimer(self)
        self._pause_timer.setSingleShot(True)
        self._pause_timer.setInterval(settings.suggestions.delay_ms)
        self._pause_timer.timeout.connect(self._pause_elapsed)

        self._create_actions(window)
        self.options = SuggestionOptions(
            self.inline_action, self.automatic_action, settings.suggestions.delay_ms
        )
        self.options.delay_box.valueChanged.connect(self._delay_changed)

        editor.installEventFilter(self)
        # QTextDocument emits contentsChange before the cursor and contentsChanged signals that
        # the window's prefill timer follows, so a suggestion's run is stopped before the window
        # decides whether to compute the prompt ahead.
        editor.document().contentsChange.connect(self._document_changed)
        editor.cursorPositionChanged.connect(self._cursor_moved)
        controller.generation_started.connect(self._started)
        controller.text_ready.connect(self._text_ready)
        controller.generation_finished.connect(self._finished)
        controller.generation_failed.connect(self._failed)

    def _create_actions(self, window: QMainWindow) -> None:
        self.inline_action = QAction("&Inline Suggestions", window)
        self.inline_action.setCheckable(True)
        self.inline_action.setChecked(self.settings.suggestions.inline)
        self.inline_action.setShortcut(QKeySequence(TOGGLE_SHORTCUT))
        tip = (
            "Show each completion as grey text after the cursor that enters the document only "
            f"when you accept it ({TOGGLE_SHORTCUT})"
        )
        self.inline_action.setToolTip(tip)
        self.inline_action.setStatusTip(tip)
        self.inline_action.toggled.connect(self._inline_toggled)

        self.automatic_action = QAction("Suggest After a &Pause", window)
        self.automatic_action.setCheckable(True)
        self.automatic_action.setChecked(self.settings.suggestions.automatic)
        self.automatic_action.setEnabled(self.settings.suggestions.inline)
        self.automatic_action.setShortcut(QKeySequence(AUTOMATIC_SHORTCUT))
        tip = f"Start a suggestion at the cursor when typing pauses ({AUTOMATIC_SHORTCUT})"
        self.automatic_action.setToolTip(tip)
        self.automatic_action.setStatusTip(tip)
        self.automatic_action.toggled.connect(self._automatic_toggled)

    @property
    def actions(self) -> tuple[QAction, ...]:
        """The actions for the Draft menu."""
        return (self.inline_action, self.automatic_action)

    @property
    def inline(self) -> bool:
        """True when Generate shows suggestions instead of inserting completions."""
        return self.inline_action.isChecked()

    @property
    def shown(self) -> bool:
        """True while a suggestion is drawn: its text remains and the caret sits at its start."""
        suggestion = self.suggestion
        if suggestion is None or not suggestion.remaining:
            return False
        cursor = self.editor.textCursor()
        return not cursor.hasSelection() and cursor.position() == self._anchor.position()

    @property
    def anchor(self) -> int:
        """Document position where the remaining suggestion starts."""
        return self._anchor.position()

    def owns_latest_run(self) -> bool:
        """True when the controller's latest generation request is a suggestion's.

        The controller forwards generation signals of that request only, so while this is True
        they belong to the suggestion and not to a completion in the document.
        """
        return self._job is not None and self._job == self.controller.latest_generation_job

    # --- the suggestion's run ---------------------------------------------------------------

    def start(self, text: str, position: int, params: SamplingParams) -> None:
        """Start a suggestion that continues `text`, the document before `position`."""
        model = self.controller.model
        if model is None:
            return
        self.dismiss()
        self._pause_timer.stop()
        cursor = self.editor.textCursor()
        if cursor.hasSelection():
            cursor.setPosition(position)
            self.editor.setTextCursor(cursor)
        self.editor.setFocus()  # Generate may have been clicked, and Tab must reach the editor
        self.suggestion = Suggestion()
        self._anchor.setPosition(position)
        self._text_before = text
        self._params = params
        self._model = model
        self._prompt = None
        self._result = None
        self._waiting_records = []
        self._record = None
        self.controller.generate(text, params)
        self._job = self.controller.latest_generation_job
        log.debug("Suggestion job %s started at position %d", self._job, position)

    def _started(self, prompt: Prompt) -> None:
        if self.owns_latest_run():
            self._prompt = prompt
        elif self.suggestion is not None:
            self.dismiss()  # another request, such as alternatives, replaced the suggestion's run

    def _text_ready(self, piece: str) -> None:
        if self.owns_latest_run() and self.suggestion is not None:
            self.suggestion.append(piece)
            self._refresh()

    def _finished(self, result: GenerationResult) -> None:
        if not self.owns_latest_run():
            return
        self._result = result
        for record in self._waiting_records:
            record.set_result(dataclasses.replace(result, text=record.text))
        self._waiting_records = []
        suggestion = self.suggestion
        if suggestion is None:
            return
        suggestion.complete = True
        if not suggestion.remaining:
            if suggestion.accepted == 0:
                self.status_bar.showMessage("The model suggested nothing at the cursor", 5000)
            self.dismiss()
            return
        words = plural(suggestion.word_count, "word")
        announce(self.editor, f"{ANNOUNCEMENT_PREFIX}, {words}")
        self.status_bar.showMessage(f"Suggestion ready. {key_names()}", STATUS_TIMEOUT_MS)
        self._refresh()

    def _failed(self, _message: str) -> None:
        if not self.owns_latest_run():
            return
        for record in self._waiting_records:
            record.stop_reason = STOP_FAILED
        self._waiting_records = []
        if self.suggestion is not None:
            self.suggestion.complete = True
            if not self.suggestion.remaining:
                self.dismiss()
        self._refresh()

    def dismiss(self) -> None:
        """Drop the suggestion and stop its run. Text accepted from it stays."""
        if self.owns_latest_run() and self.controller.is_generating:
            self.controller.stop()
            self.run_stopped.emit()
        if self.suggestion is None:
            return
        self.suggestion = None
        self.ghost.hide()
        if self.editor.accessibleDescription().startswith(ANNOUNCEMENT_PREFIX):
            self.editor.setAccessibleDescription("")

    # --- accepting ----------------------------------------------------------------------------

    def accept_all(self) -> bool:
        """Insert all of the suggestion's text so far, or return False when none is shown."""
        if not self.shown:
            return False
        assert self.suggestion is not None
        self._accept(self.suggestion.remaining)
        return True

    def accept_word(self) -> bool:
        """Insert the suggestion's next word, or return False when no suggestion is shown."""
        if not self.shown:
            return False
        assert self.suggestion is not None
        word = self.suggestion.next_word()
        if word is None:
            self.status_bar.showMessage("The next word of the suggestion is still arriving", 3000)
        elif word:
            self._accept(word)
        return True

    def accept_sentence(self) -> bool:
        """Insert the suggestion's next sentence, or return False when none is shown."""
        if not self.shown:
            return False
        assert self.suggestion is not None
        context = text_before(self.editor.document(), self.anchor)
        sentence = self.suggestion.next_sentence(context)
        if sentence is None:
            self.status_bar.showMessage(
                "The next sentence of the suggestion is still arriving", 3000
            )
        elif sentence:
            self._accept(sentence)
        return True

    def _accept(self, text: str) -> None:
        """Insert `text`, the start of the remaining suggestion, with a review mark and record.

        Text accepted right after an earlier part of the same suggestion joins that part's
        passage and record, unless that passage was marked reviewed meanwhile.

        NOTE: Undo of a later part and then Redo bring its text back right after the passage, and
        ReviewMarks keeps text inserted at a passage's edge outside it, so that text is unmarked.
        """
        suggestion = self.suggestion
        assert suggestion is not None
        assert self._params is not None
        assert self._model is not None
        offset = suggestion.accepted
        extending = self._can_extend() and self.review.continue_current()
        if not extending:
            self.review.begin(self._text_before, self._params, self._model)
            if self._prompt is not None:
                self.review.prompt_ready(self._prompt)
        self._accepting = True
        try:
            insertion = StreamInsertion(self.editor.document(), self.anchor)
            before = insertion.position
            insertion.insert(text)
            insertion.finish()
            self.review.text_inserted(text, before, insertion.position)
        finally:
            self._accepting = False
        record = self.review.current_record
        if record is not None and not extending:
            record.text_offset = offset
            self._record = record
        if record is not None and self._result is not None:
            self.review.result_ready(dataclasses.replace(self._result, text=record.text))
        elif record is not None and all(item is not record for item in self._waiting_records):
            self._waiting_records.append(record)
        self.review.end_stream()
        log.debug(
            "Accepted %d characters of suggestion job %s at offset %d",
            len(text),
            self._job,
            offset,
        )

        suggestion.take(text)
        self._anchor.setPosition(insertion.position)
        cursor = self.editor.textCursor()
        cursor.setPosition(insertion.position)
        self.editor.setTextCursor(cursor)
        if suggestion.complete and not suggestion.remaining:
            self.dismiss()
        self._refresh()

    def _can_extend(self) -> bool:
        """True when the suggestion's unreviewed passage ends right where the next part goes."""
        record = self._record
        if record is None or record.reviewed or self.review.current_record is not record:
            return False
        return any(
            passage.record is record and passage.end == self.anchor
            for passage in self.review.marks.passages()
        )

    # --- keys and edits -----------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is not self.editor or not isinstance(event, QKeyEvent):
            return False
        if event.type() == QEvent.Type.ShortcutOverride:
            # Claim the key from window shortcuts (Esc is Stop) while a suggestion is shown.
            if self.shown and self._command(event) is not None:
                event.accept()
                return True
            return False
        if event.type() != QEvent.Type.KeyPress:
            return False
        command = self._command(event) if self.shown else None
        if command is not None:
            command()
            event.accept()
            return True
        if not (
            event.matches(QKeySequence.StandardKey.Undo)
            or event.matches(QKeySequence.StandardKey.Redo)
        ):
            # Typing: a document change during this key press restarts the pause timer.
            self._key_pending = True
            self._key_changed_text = False
            QTimer.singleShot(0, self._key_handled)
        return False

    def _command(self, event: QKeyEvent) -> Callable[[], object] | None:
        combination = QKeySequence(event.keyCombination())
        if combination == ACCEPT_ALL_KEY:
            return self.accept_all
        if event.matches(ACCEPT_WORD_KEY):
            return self.accept_word
        if combination == ACCEPT_SENTENCE_KEY:
            return self.accept_sentence
        if combination == DISMISS_KEY:
            return self.dismiss
        return None

    def _key_handled(self) -> None:
        self._key_pending = False
        self._key_changed_text = False

    def _document_changed(self, _position: int, _removed: int, _added: int) -> None:
        if self._accepting:
            return
        self.dismiss()
        if self._key_pending and self.inline and self.automatic_action.isChecked():
            self._key_changed_text = True
            self._pause_timer.start()
        else:
            self._pause_timer.stop()

    def _cursor_moved(self) -> None:
        if self._accepting:
            return
        if not (self._key_pending and self._key_changed_text):
            self._pause_timer.stop()  # the caret moved without typing
        self._refresh()

    def _pause_elapsed(self) -> None:
        if not (self.inline and self.automatic_action.isChecked()):
            return
        controller = self.controller
        if controller.model is None or controller.is_loading or controller.is_generating:
            return
        if self.editor.textCursor().hasSelection() or self.shown:
            return
        self.generate_requested.emit()

    def _refresh(self) -> None:
        if self.shown:
            assert self.suggestion is not None
            self.ghost.show(self.anchor, self.suggestion.remaining)
        else:
            self.ghost.hide()

    # --- options ----------------------------------------------------------------------------

    def _inline_toggled(self, checked: bool) -> None:
        self.settings.suggestions.inline = checked
        self.automatic_action.setEnabled(checked)
        if not checked:
            self._pause_timer.stop()
            self.dismiss()
        self.settings_changed.emit()

    def _automatic_toggled(self, checked: bool) -> None:
        self.settings.suggestions.automatic = checked
        if not checked:
            self._pause_timer.stop()
        self.settings_changed.emit()

    def _delay_changed(self, delay_ms: int) -> None:
        self.settings.suggestions.delay_ms = delay_ms
        self._pause_timer.setInterval(delay_ms)
        self.settings_changed.emit()

    @property
    def pause_timer(self) -> QTimer:
        """The timer that starts an automatic suggestion after a pause in typing."""
        return self._pause_timer
