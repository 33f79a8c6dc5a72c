"""Runs a model download off the GUI thread and reports it through signals."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from kl3m_desk.download import (
    DEFAULT_REPO,
    DownloadCancelled,
    DownloadError,
    download_model,
    model_size_text,
    plan_download,
)

log = logging.getLogger(__name__)


class DownloadWorker(QObject):
    """Plans and runs one download on its own thread; never touches a widget."""

    # total size for display, once the Hub has listed the files
    planned = Signal(str)
    # bytes done, bytes in all, bytes per second
    progress = Signal(object, object, float)
    # folder of the checked, complete model
    finished = Signal(Path)
    # message for the user; "" after a cancel
    failed = Signal(str)

    def __init__(self, repo_id: str, endpoint: str | None, cancel: threading.Event) -> None:
        super().__init__()
        self._repo_id = repo_id
        self._endpoint = endpoint
        self._cancel = cancel

    @Slot()
    def run(self) -> None:
        """Plan and download; every outcome ends in `finished` or `failed`."""
        try:
            plan = plan_download(self._repo_id, endpoint=self._endpoint)
            self.planned.emit(model_size_text(plan))
            folder = download_model(
                plan,
                endpoint=self._endpoint,
                progress=lambda done, total, speed: self.progress.emit(done, total, speed),
                cancel=self._cancel,
            )
        except DownloadCancelled:
            log.info("Download of %s cancelled", self._repo_id)
            self.failed.emit("")
            return
        except DownloadError as error:
            log.warning("Download of %s failed: %s", self._repo_id, error)
            self.failed.emit(str(error))
            return
        except Exception as error:  # reported to the window, never a silent stop
            log.exception("Download of %s failed unexpectedly", self._repo_id)
            self.failed.emit(f"The download failed: {type(error).__name__}: {error}")
            return
        self.finished.emit(folder)


class DownloadTask(QObject):
    """A download with its thread; call `start` once, `cancel` any time, from the GUI thread."""

    planned = Signal(str)
    progress = Signal(object, object, float)
    finished = Signal(Path)
    failed = Signal(str)

    def __init__(
        self,
        repo_id: str = DEFAULT_REPO,
        endpoint: str | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("download")
        self._worker = DownloadWorker(repo_id, endpoint, self._cancel)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.planned.connect(self.planned)
        self._worker.progress.connect(self.progress)
        self._worker.finished.connect(self.finished)
        self._worker.failed.connect(self.failed)
        self._worker.finished.connect(self._thread.quit)
        self._worker.failed.connect(self._thread.quit)

    def start(self) -> None:
        """Start the download on its thread."""
        self._thread.start()

    def cancel(self) -> None:
        """Ask the download to stop; `failed("")` follows within about a second."""
        self._cancel.set()

    def wait(self) -> None:
        """Cancel and wait for the thread to end, for example when the window closes."""
        self._cancel.set()
        self._thread.quit()
        self._thread.wait()
