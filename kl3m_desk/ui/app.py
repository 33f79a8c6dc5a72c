"""Start-up of the windowed app: QApplication, exception hook, main window and model load."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QIcon, QTextCursor
from PySide6.QtWidgets import QApplication, QMessageBox

from kl3m_desk import APP_NAME, __version__, paths
from kl3m_desk.journal import InstanceLock, find_recoverable
from kl3m_desk.resources import ResourceNotFoundError, bundled_model_dir, resource_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.main_window import MainWindow
from kl3m_desk.ui.message_bar import Topic
from kl3m_desk.ui.recovery import offer_recovery

log = logging.getLogger(__name__)


class ExceptionReporter(QObject):
    """Logs uncaught exceptions from any thread and shows them in a dialog on the GUI thread."""

    # summary, formatted traceback; emitted from any thread, delivered on the GUI thread
    _report = Signal(str, str)

    def __init__(self, log_path: Path | None) -> None:
        super().__init__()
        self._log_path = log_path
        self._dialog_open = False
        self._report.connect(self._show, Qt.ConnectionType.QueuedConnection)

    def install(self) -> None:
        """Route uncaught exceptions of the main thread and of Python threads here."""
        sys.excepthook = self.handle
        threading.excepthook = lambda args: self.handle(
            args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback
        )

    def handle(
        self, exc_type: type[BaseException], value: BaseException, trace: TracebackType | None
    ) -> None:
        """Log the exception and ask the GUI thread to show it."""
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        log.critical("Uncaught exception", exc_info=(exc_type, value, trace))
        details = "".join(traceback.format_exception(exc_type, value, trace))
        self._report.emit(f"{exc_type.__name__}: {value}", details)

    def _show(self, summary: str, details: str) -> None:
        if self._dialog_open or QApplication.instance() is None:
            return
        self._dialog_open = True
        try:
            where = f"\n\nThe log file {self._log_path} has the details." if self._log_path else ""
            box = QMessageBox(
                QMessageBox.Icon.Critical,
                APP_NAME,
                f"An unexpected error occurred: {summary}{where}\n\n"
                "Your document is still open; save it before you continue.",
            )
            box.setDetailedText(details)
            box.exec()
        finally:
            self._dialog_open = False


def generate_when_ready(window: MainWindow) -> None:
    """Continue the window's document at its end once the next model has loaded."""

    def start(_loaded: object) -> None:
        window.controller.model_ready.disconnect(start)
        cursor = window.editor.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        window.editor.setTextCursor(cursor)
        window.generate()

    window.controller.model_ready.connect(start)


def run_gui(
    model: Path | None, file: Path | None, log_path: Path | None, generate: bool = False
) -> int:
    """Open the drafting window and run the event loop; returns the exit status.

    With `generate`, the document is continued at its end once the model has loaded.
    """
    QApplication.setApplicationName(APP_NAME)
    QApplication.setApplicationVersion(__version__)
    QApplication.setDesktopFileName(APP_NAME)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    QThread.currentThread().setObjectName("gui")
    reporter = ExceptionReporter(log_path)
    reporter.install()
    try:
        app.setWindowIcon(QIcon(str(resource_path("icons", "kl3m-desk.svg"))))
    except ResourceNotFoundError as error:
        log.warning("%s", error)

    settings = Settings.load()
    user_templates = paths.data_dir() / "templates"
    library = load_library([resource_path("templates"), user_templates])
    folder = model or settings.last_model_dir or bundled_model_dir()
    windows: list[MainWindow] = []

    def open_window() -> MainWindow:
        opened = MainWindow(settings, library)
        opened.show()
        if folder is not None:
            opened.load_model(folder)
        windows.append(opened)
        return opened

    window = open_window()
    if generate:
        generate_when_ready(window)
    if file is not None:
        window.open_document(file, ask=False)
    instance_lock = InstanceLock()
    try:
        instance_lock.acquire()
    except OSError as error:
        log.warning("Could not lock %s: %s", instance_lock.path, error)
    scan = find_recoverable()
    if scan.problems:
        window.message_bar.show_message(Topic.DOCUMENT, "\n".join(scan.problems))
    offer_recovery(scan.journals, window, open_window)

    status = app.exec()
    instance_lock.release()
    log.info("Exiting with status %d", status)
    return status
