"""The drafting window: editor, clause templates, sampling sliders and status bar."""

from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kl3m_desk import APP_NAME
from kl3m_desk.document_formats import FileFormat, open_file, save_file
from kl3m_desk.documents import DocumentError
from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.journal import Journal, JournalError
from kl3m_desk.model import LoadedModel
from kl3m_desk.model_catalog import list_models, models_dir
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import Settings
from kl3m_desk.stopping import StopAt
from kl3m_desk.templates import ClauseTemplate, TemplateLibrary
from kl3m_desk.ui.accessibility import announce
from kl3m_desk.ui.alternatives import AlternativesCommands
from kl3m_desk.ui.autosave import Autosave
from kl3m_desk.ui.clause_library import ClauseLibraryCommands
from kl3m_desk.ui.context_view import ContextView
from kl3m_desk.ui.download import DownloadTask
from kl3m_desk.ui.editor import DraftEditor, StreamInsertion, document_text, text_before
from kl3m_desk.ui.file_commands import DOCUMENT_FILTER, PDF_FILTER, export_pdf, tracked_insertions
from kl3m_desk.ui.first_run import APPROXIMATE_MODEL_SIZE, FirstRunPanel
from kl3m_desk.ui.inference import InferenceController
from kl3m_desk.ui.inline_suggestions import InlineSuggestions
from kl3m_desk.ui.message_bar import MessageBar, Topic
from kl3m_desk.ui.model_manager import ModelManagerDialog
from kl3m_desk.ui.parameters_panel import ParametersPanel
from kl3m_desk.ui.review_commands import ReviewCommands
from kl3m_desk.ui.templates_panel import TemplateFieldsDialog, TemplatesPanel

log = logging.getLogger(__name__)

# Milliseconds without typing or cursor moves before the prompt at the cursor is computed ahead.
PREFILL_DELAY_MS = 600

# Shown once, after the first model loads, so no draft is mistaken for legal advice.
MODEL_LIMITATIONS = (
    "Before you rely on a draft: the model writes plausible contract language, not legal advice. "
    "It can be wrong, out of date or unsuited to your matter, and every passage it generates "
    "needs review by a qualified professional."
)


class UnsavedChoice(Enum):
    """Answer to the unsaved-changes question."""

    SAVE = "save"
    DISCARD = "discard"
    CANCEL = "cancel"


class MainWindow(QMainWindow):
    """The drafting window. It owns the inference controller and ends its thread on close."""

    def __init__(
        self,
        settings: Settings,
        library: TemplateLibrary,
        controller: InferenceController | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.controller = controller or InferenceController(self)
        self.file_path: Path | None = None
        self.file_format = FileFormat()  # encoding, line ending or Word package of the file
        self._insertion: StreamInsertion | None = None
        self._download: DownloadTask | None = None
        self.download_endpoint: str | None = None  # None: the Hugging Face Hub
        self._save_settings_timer = QTimer(self)
        self._save_settings_timer.setSingleShot(True)
        self._save_settings_timer.setInterval(400)
        self._save_settings_timer.timeout.connect(self._save_settings)
        # After a pause in typing, the prompt at the cursor is computed ahead of Generate.
        self._prefill_timer = QTimer(self)
        self._prefill_timer.setSingleShot(True)
        self._prefill_timer.setInterval(PREFILL_DELAY_MS)
        self._prefill_timer.timeout.connect(self._prefill)

        self.editor = DraftEditor()
        self.message_bar = MessageBar()
        self.first_run = FirstRunPanel()
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(4, 4, 4, 0)
        central_layout.addWidget(self.first_run)
        central_layout.addWidget(self.message_bar)
        central_layout.addWidget(self.editor, 1)
        self.setCentralWidget(central)

        self.templates_panel = TemplatesPanel(library)
        self.clause_library = ClauseLibraryCommands(self, self.editor, self.templates_panel)
        self.parameters_panel = ParametersPanel(settings.sampling)
        self.review = ReviewCommands(self, self.editor, self.message_bar, self.statusBar())
        self.context_view = ContextView(
            self,
            self.editor,
            self.controller,
            self.message_bar,
            self.statusBar(),
            self.parameters_panel,
        )
        self.review.pins = self.context_view.pins  # saved and loaded with the records
        self.alternatives = AlternativesCommands(
            self, self.editor, self.controller, self.review, lambda: self.parameters_panel.params()
        )
        self.suggestions = InlineSuggestions(
            self, self.editor, self.controller, self.review, self.statusBar(), settings
        )
        self.autosave = Autosave(
            self, self.editor, self.review, self.controller, self.message_bar, self.statusBar()
        )
        self._create_actions()
        self._create_docks()
        self._create_status_bar()
        self._connect()

        self.resize(1280, 820)
        self._update_title()
        self._update_controls()
        self._show_no_model()
        if settings.load_warnings:
            # Settings.load rewrote the file, so the next start has nothing to report. Clearing
            # the list keeps further windows, such as those of recovered documents, from
            # repeating the message.
            self.message_bar.show_message(Topic.SETTINGS, "\n".join(settings.load_warnings))
            settings.load_warnings.clear()

    # --- construction ---------------------------------------------------------------------

    def _create_actions(self) -> None:
        def action(
            text: str,
            slot: object,
            shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
            tip: str = "",
        ) -> QAction:
            created = QAction(text, self)
            if shortcut is not None:
                created.setShortcut(QKeySequence(shortcut))
            if tip:
                created.setStatusTip(tip)
                created.setToolTip(tip)
            created.triggered.connect(slot)
            return created

        self.new_action = action("&New", self.new_document, QKeySequence.StandardKey.New)
        self.open_action = action(
            "&Open…", self.open_document_dialog, QKeySequence.StandardKey.Open
        )
        self.save_action = action("&Save", self.save, QKeySequence.StandardKey.Save)
        self.save_as_action = action("Save &As…", self.save_as, QKeySequence.StandardKey.SaveAs)
        self.export_pdf_action = action(
            "&Export as PDF…", self.export_pdf_dialog, None, "Print the document to a PDF file"
        )
        self.choose_model_action = action(
            "Choose &Model Folder…",
            self.choose_model_folder,
            "Ctrl+Shift+O",
            "Load a model folder with safetensors weights (Ctrl+Shift+O)",
        )
        self.models_action = action(
            "Mo&dels…",
            self.open_model_manager,
            "Ctrl+Shift+M",
            "See, switch and remove models, and set device and precision (Ctrl+Shift+M)",
        )
        # Windows defines no standard Quit key, so Ctrl+Q is set on every system.
        self.quit_action = action("&Quit", self.close, "Ctrl+Q")
        self.undo_action = action("&Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.redo_action = action("&Redo", self.editor.redo, QKeySequence.StandardKey.Redo)
        self.generate_action = action(
            "&Generate",
            self.generate,
            "Ctrl+Return",
            "Continue the document at the cursor (Ctrl+Enter)",
        )
        self.stop_action = action("&Stop", self.stop, "Esc", "Stop generating (Esc)")
        self.finish_sentence_action = action(
            "Finish This Se&ntence",
            self.finish_sentence,
            "Ctrl+Shift+Return",
            "Continue at the cursor and stop at the end of the sentence (Ctrl+Shift+Enter)",
        )
        self.finish_clause_action = action(
            "Finish This &Clause",
            self.finish_clause,
            "Ctrl+Alt+Return",
            "Continue at the cursor and stop before the next clause number (Ctrl+Alt+Enter)",
        )
        self.generate_action.setIcon(QIcon.fromTheme("media-playback-start"))
        self.stop_action.setIcon(QIcon.fromTheme("media-playback-stop"))
        self.undo_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)

        file_menu = self.menuBar().addMenu("&File")
        for item in (self.new_action, self.open_action, self.save_action, self.save_as_action):
            file_menu.addAction(item)
        file_menu.addAction(self.export_pdf_action)
        file_menu.addAction(self.review.export_action)
        file_menu.addSeparator()
        file_menu.addAction(self.choose_model_action)
        file_menu.addAction(self.models_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = self.menuBar().addMenu("&Edit")
        edit_menu.addAction(self.undo_action)
        edit_menu.addAction(self.redo_action)
        edit_menu.addSeparator()
        edit_menu.addActions(self._clipboard_actions())
        draft_menu = self.menuBar().addMenu("&Draft")
        draft_menu.addAction(self.generate_action)
        draft_menu.addAction(self.finish_sentence_action)
        draft_menu.addAction(self.finish_clause_action)
        draft_menu.addAction(self.stop_action)
        draft_menu.addSeparator()
        for item in self.suggestions.actions:
            draft_menu.addAction(item)
        draft_menu.addSeparator()
        for item in self.alternatives.actions:
            draft_menu.addAction(item)
        draft_menu.addSeparator()
        for item in self.review.review_actions:
            draft_menu.addAction(item)
        draft_menu.addSeparator()
        for item in self.context_view.actions:
            draft_menu.addAction(item)
        draft_menu.addSeparator()
        draft_menu.addAction(self.clause_library.action)

        toolbar = self.addToolBar("Drafting")
        toolbar.setObjectName("draftingToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for item in (self.open_action, self.save_action):
            toolbar.addAction(item)
        toolbar.addSeparator()
        toolbar.addAction(self.generate_action)
        toolbar.addAction(self.stop_action)

    def _clipboard_actions(self) -> list[QAction]:
        # The editor's own context menu has these too; the Edit menu shows their shortcuts.
        editor = self.editor
        entries = (
            ("Cu&t", editor.cut, QKeySequence.StandardKey.Cut),
            ("&Copy", editor.copy, QKeySequence.StandardKey.Copy),
            ("&Paste", editor.paste, QKeySequence.StandardKey.Paste),
            ("Select &All", editor.selectAll, QKeySequence.StandardKey.SelectAll),
        )
        actions = []
        for text, slot, key in entries:
            action = QAction(text, self)
            action.setShortcut(key)
            # The editor handles these keys itself while it has focus; the menu entry must not
            # take them over as a window-wide shortcut.
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            action.triggered.connect(slot)
            actions.append(action)
        return actions

    def _create_docks(self) -> None:
        templates_dock = QDockWidget("Clause templates", self)
        templates_dock.setObjectName("templatesDock")
        templates_dock.setWidget(self.templates_panel)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, templates_dock)

        sampling = QWidget()
        layout = QVBoxLayout(sampling)
        layout.addWidget(self.parameters_panel)
        layout.addWidget(self.suggestions.options)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip(self.generate_action.toolTip())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(self.stop_action.toolTip())
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        layout.addStretch(1)
        sampling_dock = QDockWidget("Sampling", self)
        sampling_dock.setObjectName("samplingDock")
        sampling_dock.setWidget(sampling)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, sampling_dock)

        view_menu = self.menuBar().addMenu("&View")
        panels = (
            (templates_dock, "Ctrl+Alt+1"),
            (sampling_dock, "Ctrl+Alt+2"),
            (self.alternatives.dock, "Ctrl+Alt+3"),
        )
        for dock, shortcut in panels:
            toggle = dock.toggleViewAction()
            toggle.setShortcut(QKeySequence(shortcut))
            toggle.setToolTip(f"Show or hide the {dock.windowTitle()} panel ({shortcut})")
            view_menu.addAction(toggle)

    def _create_status_bar(self) -> None:
        status = self.statusBar()
        self.model_label = QLabel("No model")
        self.context_label = self.context_view.label
        self.speed_label = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setMaximumWidth(220)
        self.load_progress.setVisible(False)
        self.cancel_load_button = QPushButton("Cancel")
        self.cancel_load_button.setToolTip("Stop loading or importing the model")
        self.cancel_load_button.setVisible(False)
        self.cancel_load_button.clicked.connect(self.cancel_load)
        # The context and speed labels are normal widgets, which the status bar hides while it
        # shows a message, so that long messages such as key hints have room. Permanent widgets
        # stay visible and would cut those messages short.
        status.addWidget(self.context_label)
        status.addWidget(self.speed_label)
        status.addPermanentWidget(self.review.counter_label)
        status.addPermanentWidget(self.load_progress)
        status.addPermanentWidget(self.cancel_load_button)
        status.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.editor.undo_requested.connect(self.undo)
        self.editor.document().modificationChanged.connect(self.setWindowModified)
        self.editor.document().contentsChanged.connect(self._text_or_cursor_moved)
        self.editor.document().contentsChange.connect(self._stop_if_typed_into_completion)
        self.editor.cursorPositionChanged.connect(self._text_or_cursor_moved)
        self.editor.document().undoAvailable.connect(self.undo_action.setEnabled)
        self.editor.document().redoAvailable.connect(self.redo_action.setEnabled)
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        self.parameters_panel.params_changed.connect(self._params_changed)
        self.templates_panel.template_chosen.connect(self.choose_template)
        self.first_run.choose_folder_requested.connect(self.choose_model_folder)
        self.first_run.download_requested.connect(self.start_download)
        self.first_run.cancel_requested.connect(self.cancel_download)
        self.first_run.previous_chosen.connect(self.load_model)

        self.controller.load_progress.connect(self._load_progress)
        self.controller.model_ready.connect(self._model_ready)
        self.controller.model_ready.connect(self.review.model_ready)
        self.controller.load_failed.connect(self._load_failed)
        self.controller.generation_started.connect(self._generation_started)
        self.controller.text_ready.connect(self._text_ready)
        self.controller.generation_finished.connect(self._generation_finished)
        self.controller.generation_failed.connect(self._generation_failed)
        self.suggestions.generate_requested.connect(self.generate)
        self.suggestions.settings_changed.connect(self._save_settings_timer.start)
        self.suggestions.run_stopped.connect(self._update_controls)
        self.controller.alternatives_finished.connect(self._alternatives_finished)

    # --- state shown in the window --------------------------------------------------------

    def _update_title(self) -> None:
        name = self.file_path.name if self.file_path else "Untitled"
        self.setWindowTitle(f"{name}[*] — {APP_NAME}")
        self.setWindowModified(self.editor.document().isModified())

    def _update_controls(self) -> None:
        ready = self.controller.model is not None and not self.controller.is_loading
        generating = self.controller.is_generating
        self.generate_action.setEnabled(ready)
        self.generate_button.setEnabled(ready)
        self.finish_sentence_action.setEnabled(ready)
        self.finish_clause_action.setEnabled(ready)
        self.alternatives.set_ready(ready)
        self.stop_action.setEnabled(generating)
        self.stop_button.setEnabled(generating)
        self.templates_panel.insert_button.setEnabled(
            ready and self.templates_panel.tree.currentItem() is not None
        )

    def _show_no_model(self) -> None:
        """Show the first-run panel while no model is loaded or loading."""
        needed = self.controller.model is None and not self.controller.is_loading
        if needed:
            self.first_run.set_previous(list_models(self.settings))
        self.first_run.setVisible(needed)

    # --- model ----------------------------------------------------------------------------

    def load_model(self, folder: Path) -> None:
        """Load the model in `folder` in the background; Generate stays disabled until ready."""
        self._end_insertion()
        self.message_bar.clear(Topic.MODEL)
        self.model_label.setText(f"Loading {folder.name}…")
        self.load_progress.setRange(0, 0)
        self.load_progress.setVisible(True)
        self.cancel_load_button.setVisible(True)
        self.controller.load(folder, self.settings.device, self.settings.precision)
        self.first_run.hide()
        self._update_controls()

    def confirm_download(self) -> bool:
        """Ask for consent before the app's only network connection."""
        answer = QMessageBox.question(
            self,
            "Download kl3m-002-520m",
            "kl3m-desk will connect to the Hugging Face Hub (huggingface.co) and download "
            f"kl3m-002-520m, {APPROXIMATE_MODEL_SIZE}, into {models_dir()}.\n\n"
            "This is the only time kl3m-desk uses the internet. Your documents never leave this "
            "computer. You can cancel the download and resume it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def start_download(self) -> None:
        """Download kl3m-002-520m after the user agreed, then load it."""
        if self._download is not None or not self.confirm_download():
            return
        self._download = DownloadTask(endpoint=self.download_endpoint, parent=self)
        self._download.planned.connect(
            lambda size: self.first_run.show_status(f"Downloading kl3m-002-520m, {size}")
        )
        self._download.progress.connect(self.first_run.show_progress)
        self._download.finished.connect(self._download_finished)
        self._download.failed.connect(self._download_failed)
        self.first_run.set_downloading(True)
        self._download.start()

    def cancel_download(self) -> None:
        """Stop the running download; what arrived so far is kept for the next attempt."""
        if self._download is not None:
            self._download.cancel()

    def _download_finished(self, folder: Path) -> None:
        self._end_download()
        self.first_run.show_status("")
        self.load_model(folder)

    def _download_failed(self, message: str) -> None:
        self._end_download()
        if message:
            self.first_run.show_status("The download stopped. Click Download to try again.")
            self.message_bar.show_message(Topic.MODEL, message)
        else:
            self.first_run.show_status(
                "Download cancelled. Click Download to continue where it stopped."
            )

    def _end_download(self) -> None:
        if self._download is not None:
            self._download.wait()
            self._download.deleteLater()
            self._download = None
        self.first_run.set_downloading(False)

    def cancel_load(self) -> None:
        """Stop loading the model; the model loaded before, if any, stays in use."""
        self.controller.cancel_load()
        self._loading_ended()
        self.statusBar().showMessage("Model loading cancelled", 5000)
        self._show_no_model()
        self._update_controls()

    def _loading_ended(self) -> None:
        self.load_progress.setVisible(False)
        self.cancel_load_button.setVisible(False)
        loaded = self.controller.model
        self.model_label.setText(loaded.describe() if loaded else "No model")

    def open_model_manager(self) -> None:
        """Show the model manager; the model picked there is loaded without a restart."""
        current = self.controller.model.folder if self.controller.model else None
        dialog = ModelManagerDialog(self.settings, current, self)
        dialog.model_chosen.connect(self.load_model)
        dialog.placement_changed.connect(self._placement_changed)
        dialog.settings_changed.connect(self._save_settings)
        dialog.exec()

    def _placement_changed(self) -> None:
        """Save the device and precision override and reload the current model with it."""
        self._save_settings()
        if self.controller.model is not None:
            self.load_model(self.controller.model.folder)

    def choose_model_folder(self) -> None:
        """Ask for a model folder and load it."""
        start = str(self.settings.last_model_dir or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose model folder", start)
        if folder:
            self.load_model(Path(folder))

    @Slot(int, int, str)
    def _load_progress(self, step: int, total: int, text: str) -> None:
        self.load_progress.setRange(0, total)
        self.load_progress.setValue(step)
        self.load_progress.setFormat(text)
        self.statusBar().showMessage(text)

    @Slot(object)
    def _model_ready(self, loaded: LoadedModel) -> None:
        self._loading_ended()
        self.message_bar.clear(Topic.MODEL)
        self.model_label.setToolTip(
            f"{loaded.folder}\n{loaded.parameter_count:,} parameters, "
            f"{loaded.max_positions:,} positions, loaded in {loaded.load_seconds:.1f} s\n"
            f"{loaded.device_reason}"
        )
        self.parameters_panel.set_maximum("max_new_tokens", loaded.max_positions - 1)
        self.statusBar().showMessage(f"Model ready: {loaded.name}", 5000)
        self.first_run.hide()
        self.settings.remember_model_dir(loaded.folder)
        if not self.settings.limitations_shown:
            self.message_bar.show_message(Topic.NOTICE, MODEL_LIMITATIONS)
            self.settings.limitations_shown = True
        self._save_settings()
        self._update_controls()

    @Slot(str)
    def _load_failed(self, message: str) -> None:
        self._loading_ended()
        still_loaded = self.controller.model
        if still_loaded is not None:
            self.statusBar().showMessage(
                f"The model could not be loaded; {still_loaded.name} is still in use", 8000
            )
        else:
            self.statusBar().showMessage("The model could not be loaded", 8000)
        self.message_bar.show_message(Topic.MODEL, message, self.choose_model_action)
        self._show_no_model()
        self._update_controls()

    # --- generation -----------------------------------------------------------------------

    def generate(self, *, stop_at: StopAt | None = None) -> None:
        """Continue the document at the cursor; a running generation is stopped first.

        `stop_at` replaces the Sampling panel's stop option for this run only.
        """
        if self.controller.model is None or self.controller.is_loading:
            return
        params = self.parameters_panel.params()
        if stop_at is not None:
            params = params.replace(stop_at=stop_at)
        self._end_insertion()
        self.alternatives.abandon()
        self._prefill_timer.stop()  # the generation computes the prompt itself
        position = self.editor.textCursor().position()
        text = text_before(self.editor.document(), position)
        self.message_bar.clear(Topic.GENERATION)
        if self.suggestions.inline:
            self.suggestions.start(text, position, params)
        else:
            self.suggestions.dismiss()
            self._insertion = StreamInsertion(self.editor.document(), position)
            self.review.begin(text, params, self.controller.model)
            self.controller.generate(text, params)
        self.speed_label.setText("Generating…")
        self._update_controls()

    def finish_sentence(self) -> None:
        """Continue at the cursor to the end of the sentence, whatever the panel's stop option."""
        self.generate(stop_at="sentence")

    def finish_clause(self) -> None:
        """Continue at the cursor to the next clause number, whatever the panel's stop option."""
        self.generate(stop_at="clause")

    @Slot()
    def _text_or_cursor_moved(self) -> None:
        if self.controller.is_generating or self.controller.model is None:
            return
        self.controller.cancel_prefill()
        self._prefill_timer.start()

    @Slot(int, int, int)
    def _stop_if_typed_into_completion(self, position: int, _removed: int, added: int) -> None:
        # Typing where the completion is being written would interleave the user's letters with
        # the model's tokens, so the completion stops and the user's text stays whole. Deleting
        # streamed text is not typing: the completion goes on, and its review mark follows.
        insertion = self._insertion
        if insertion is None or insertion.inserting or added == 0:
            return
        if not insertion.is_inside(position):
            return
        self.stop()
        self.statusBar().showMessage(
            "Stopped the completion, because you typed where it was being written", 5000
        )

    @Slot()
    def _prefill(self) -> None:
        if self.controller.is_generating or self.controller.is_loading:
            return
        position = self.editor.textCursor().position()
        text = text_before(self.editor.document(), position)
        self.controller.prefill(text, self.parameters_panel.params().max_new_tokens)

    def stop(self) -> None:
        """Stop generating; text already inserted stays in the document."""
        if self.controller.is_generating:
            self.controller.stop()
            self._end_insertion()
            self.statusBar().showMessage("Stopped", 3000)
        self._update_controls()

    def undo(self) -> None:
        """Undo the last edit, stopping a running generation first."""
        self.stop()
        self.editor.undo()

    def _end_insertion(self) -> None:
        if self.controller.is_generating:
            self.controller.stop()
        self._finish_insertion()

    def _finish_insertion(self) -> None:
        if self._insertion is not None:
            before = self._insertion.position
            self._insertion.finish()  # may insert a held-back line break
            self.review.text_inserted("", before, self._insertion.position)
            self.review.end_stream()
        self._insertion = None

    @Slot(object)
    def _generation_started(self, prompt: Prompt) -> None:
        if not self.alternatives.pending and not self.suggestions.owns_latest_run():
            self.review.prompt_ready(prompt)
        self.context_view.show_prompt(prompt)

    @Slot(str)
    def _text_ready(self, piece: str) -> None:
        if self._insertion is not None:
            before = self._insertion.position
            self._insertion.insert(piece)
            self.review.text_inserted(piece, before, self._insertion.position)

    @Slot(object)
    def _generation_finished(self, result: GenerationResult) -> None:
        count = len(result.token_ids)
        reason = {
            "eos": "end of text",
            "length": "max new tokens",
            "stopped": "stopped",
            "sentence": "end of sentence",
            "paragraph": "end of paragraph",
            "clause": "before the next clause number",
        }
        self.speed_label.setText(
            f"{count} tokens, {result.tokens_per_second:.1f} tokens/s "
            f"({reason[result.stop_reason]})"
        )
        self.speed_label.setToolTip(
            f"First token after {result.prefill_seconds:.2f} s, with {result.reused_tokens:,} "
            f"of {result.prompt.used:,} prompt tokens computed ahead; seed {result.seed}"
        )
        if not self.suggestions.owns_latest_run():  # a suggestion announces and records itself
            announce(self.editor, f"Completion ready, {len(result.text.split())} words")
            self.review.result_ready(result)
        self._finish_insertion()
        self._update_controls()

    @Slot(object)
    def _alternatives_finished(self, results: list[GenerationResult]) -> None:
        tokens = sum(len(result.token_ids) for result in results)
        self.speed_label.setText(f"{len(results)} alternatives, {tokens} tokens")
        self.speed_label.setToolTip("Choose one in the Alternatives panel and insert it")
        self._update_controls()

    @Slot(str)
    def _generation_failed(self, message: str) -> None:
        if self.alternatives.pending:
            self.alternatives.request_failed()
        elif not self.suggestions.owns_latest_run():
            self.review.generation_failed()
        self._finish_insertion()
        self.speed_label.setText("Generation failed")
        self.message_bar.show_message(Topic.GENERATION, message)
        self._update_controls()

    # --- templates ------------------------------------------------------------------------

    def choose_template(self, template: ClauseTemplate) -> None:
        """Ask for the template's fields, then insert it and continue."""
        dialog = TemplateFieldsDialog(template, self.review.field_values, self)
        if dialog.exec() == TemplateFieldsDialog.DialogCode.Accepted:
            self.review.field_values.update(dialog.values())
            self.insert_template_text(dialog.filled_text)

    def insert_template_text(self, text: str) -> None:
        """Insert filled template text at the cursor as one undo step and continue after it."""
        cursor = self.editor.textCursor()
        cursor.beginEditBlock()
        block_start = cursor.atBlockStart() if not cursor.hasSelection() else True
        if not block_start:
            cursor.insertText("\n\n")
        cursor.insertText(text)
        cursor.endEditBlock()
        self.editor.setTextCursor(cursor)
        self.generate()

    # --- files ----------------------------------------------------------------------------

    def new_document(self) -> None:
        """Start an empty document after asking about unsaved changes."""
        if not self.maybe_save_changes():
            return
        self._end_insertion()
        self.controller.forget_window()
        self.editor.setPlainText("")
        self.review.clear()
        self.file_path = None
        self.file_format = FileFormat()
        self.message_bar.clear(Topic.FORMAT)
        self.editor.document().setModified(False)
        self._update_title()
        self._update_controls()
        self._reset_document_status()

    def _reset_document_status(self) -> None:
        # The speed and context of the previous document's completion do not apply any more.
        self.speed_label.clear()
        self.context_view.refresh()

    def open_document_dialog(self) -> None:
        """Ask for a file and open it."""
        if not self.maybe_save_changes():
            return
        start = str(self.file_path.parent if self.file_path else Path.home())
        name, _ = QFileDialog.getOpenFileName(self, "Open document", start, DOCUMENT_FILTER)
        if name:
            self.open_document(Path(name), ask=False)

    def open_document(self, path: Path, ask: bool = True) -> bool:
        """Open `path`; on failure the current document stays as it is."""
        if ask and not self.maybe_save_changes():
            return False
        try:
            document = open_file(path)
        except DocumentError as error:
            log.warning("Could not open %s: %s", path, error)
            self.message_bar.show_message(Topic.DOCUMENT, str(error))
            return False
        self._end_insertion()
        self.controller.forget_window()
        self.message_bar.clear(Topic.FORMAT)
        self.editor.setPlainText(document.text)
        self.review.load_for(path)
        self.file_format = document.file_format
        if document.notice:
            self.message_bar.show_message(Topic.FORMAT, document.notice)
        self.file_path = path
        self.editor.document().setModified(False)
        self._update_title()
        self._update_controls()
        self._reset_document_status()
        if document.mixed_newlines:
            ending = "CRLF" if document.file_format.newline == "\r\n" else "LF"
            self.statusBar().showMessage(
                f"{path.name} mixes line endings; saving will use {ending} throughout.", 8000
            )
        log.info("Opened %s", path)
        return True

    def is_pristine(self) -> bool:
        """Return True for an empty untitled document without changes."""
        document = self.editor.document()
        return self.file_path is None and not document.isModified() and document.isEmpty()

    def open_recovered(self, journal: Journal) -> None:
        """Show the document saved in a recovery journal, with its marks and unsaved changes.

        The file path is kept, so Save writes to the original file.
        """
        try:
            review_file = journal.review_file()
        except JournalError as error:
            log.warning("Recovering %s without review marks: %s", journal.path, error)
            self.message_bar.show_message(
                Topic.DOCUMENT, f"{error} The document was recovered without review marks."
            )
            review_file = None
        self._end_insertion()
        self.controller.forget_window()
        self.editor.setPlainText(journal.text)
        self.review.clear()
        if review_file is not None:
            self.review.restore(review_file, journal.file_path)
        self.file_path = journal.file_path
        self.file_format = self._recovered_format(journal)
        self.review.field_values.update(journal.field_values)
        self.editor.document().setModified(True)
        self.autosave.adopt(journal)
        self._update_title()
        self._update_controls()
        self._reset_document_status()
        log.info("Recovered %s from %s", journal.display_name, journal.path)

    def _recovered_format(self, journal: Journal) -> FileFormat:
        # The journal contains text only. The file on disk is the version the text was last saved
        # as, so it supplies the encoding, or the Word package that a .docx save writes into.
        file_format = FileFormat(newline=journal.newline)
        path = journal.file_path
        if path is None or not path.is_file():
            return file_format
        try:
            on_disk = open_file(path).file_format
        except DocumentError as error:
            log.warning("Recovering %s without its file's format: %s", path, error)
            return file_format
        return dataclasses.replace(on_disk, newline=journal.newline)

    def save(self) -> bool:
        """Save to the current file, or ask for one; returns True when the text was written."""
        if self.file_path is None:
            return self.save_as()
        if not self.review.confirm_unreviewed("Save"):
            return False
        return self.save_to(self.file_path)

    def save_as(self) -> bool:
        """Ask for a file name and save there."""
        if not self.review.confirm_unreviewed("Save"):
            return False
        start = str(self.file_path or Path.home() / "Untitled.docx")
        name, _ = QFileDialog.getSaveFileName(self, "Save document", start, DOCUMENT_FILTER)
        if not name:
            return False
        return self.save_to(Path(name))

    def save_to(self, path: Path) -> bool:
        """Save the document to `path`; on failure show why and keep the document open."""
        text = document_text(self.editor.document())
        insertions, authors = tracked_insertions(self.review.marks)
        try:
            self.file_format, notice = save_file(path, text, self.file_format, insertions, authors)
        except DocumentError as error:
            log.warning("Could not save %s: %s", path, error)
            self.message_bar.show_message(Topic.DOCUMENT, str(error), self.save_as_action)
            return False
        if notice:
            self.message_bar.show_message(Topic.FORMAT, notice)
        self.review.save_for(path)  # shows why when the records could not be written
        self.file_path = path
        self.editor.document().setModified(False)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        log.info("Saved %s", path)
        return True

    def export_pdf_dialog(self) -> None:
        """Ask for a PDF file name and print the document there."""
        base = self.file_path or Path.home() / "Untitled"
        name, _ = QFileDialog.getSaveFileName(
            self, "Export as PDF", str(base.with_suffix(".pdf")), PDF_FILTER
        )
        if name:
            self.export_pdf_to(Path(name))

    def export_pdf_to(self, path: Path) -> bool:
        """Print the document to the PDF `path`; on failure show why."""
        try:
            export_pdf(self.editor, path)
        except OSError as error:
            log.warning("Could not export %s: %s", path, error)
            self.message_bar.show_message(
                Topic.DOCUMENT,
                f"The PDF {path} could not be written: {error}. Choose another folder.",
                self.export_pdf_action,
            )
            return False
        self.statusBar().showMessage(f"Exported {path}", 4000)
        return True

    def ask_unsaved_changes(self) -> UnsavedChoice:
        """Ask whether to save the changes of the current document."""
        name = self.file_path.name if self.file_path else "Untitled"
        answer = QMessageBox.question(
            self,
            APP_NAME,
            f"Save the changes to {name}?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if answer == QMessageBox.StandardButton.Save:
            return UnsavedChoice.SAVE
        if answer == QMessageBox.StandardButton.Discard:
            return UnsavedChoice.DISCARD
        return UnsavedChoice.CANCEL

    def maybe_save_changes(self) -> bool:
        """Return True when the current document may be replaced or closed."""
        if not self.editor.document().isModified():
            return True
        choice = self.ask_unsaved_changes()
        if choice is UnsavedChoice.SAVE:
            return self.save()
        return choice is UnsavedChoice.DISCARD

    # --- settings and shutdown ------------------------------------------------------------

    def _params_changed(self, params: SamplingParams) -> None:
        self.settings.sampling = params
        self._save_settings_timer.start()

    def _save_settings(self) -> None:
        self._save_settings_timer.stop()
        try:
            self.settings.save()
        except OSError as error:
            log.warning("Could not save settings to %s: %s", self.settings.path, error)
            self.statusBar().showMessage(f"Settings could not be saved: {error}", 8000)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.maybe_save_changes():
            event.ignore()
            return
        self.settings.sampling = self.parameters_panel.params()
        self._save_settings()
        self._end_insertion()
        if self._download is not None:
            self._download.wait()
        self.controller.shutdown()
        self.review.shutdown()
        self.autosave.close()  # the document was saved or its changes discarded
        event.accept()
