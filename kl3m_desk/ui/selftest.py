"""Self-test of an installed or frozen app: `kl3m-desk --self-test`.

It runs the real window offscreen with Python's socket creation blocked: load the bundled model
(or a tiny random one built on the spot), stream a few tokens into a document, save it and open it
again. The outcome goes to a JSON report and the exit status, because a windowed Windows build has
no standard output. Settings and logs go to a temporary profile, so the user's own are untouched.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kl3m_desk import __version__, paths
from kl3m_desk.logging_setup import configure_logging, log_startup

# Two paragraphs and a page break, as a Word document must keep them.
WORD_TEXT = (
    "NOTICES. Every notice under this Agreement shall be in writing.\n"
    "\tNotices to the Buyer go to its principal office.\fSIGNATURE PAGE FOLLOWS"
)
SAMPLE_TEXT = "GOVERNING LAW. This Agreement shall be governed by the laws of the State of "


class SocketBlocker:
    """Replaces socket creation with a stub that records the attempt and raises OSError."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._originals: dict[str, Any] = {}

    def __enter__(self) -> SocketBlocker:
        attempts = self.attempts

        class BlockedSocket(socket.socket):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                attempts.append(f"socket{args!r}")
                raise OSError("kl3m-desk self-test: network access is blocked")

        def blocked(name: str) -> Callable[..., Any]:
            def refuse(*args: Any, **_kwargs: Any) -> Any:
                attempts.append(f"{name}{args!r}")
                raise OSError("kl3m-desk self-test: network access is blocked")

            return refuse

        self._originals = {
            "socket": socket.socket,
            "create_connection": socket.create_connection,
            "socketpair": socket.socketpair,
        }
        socket.socket = BlockedSocket  # type: ignore[misc]
        socket.create_connection = blocked("create_connection")
        socket.socketpair = blocked("socketpair")
        return self

    def __exit__(self, *_exc: object) -> None:
        for name, original in self._originals.items():
            setattr(socket, name, original)


def run_self_test(report_path: Path | None = None, model: Path | None = None) -> int:
    """Run the self-test and write its report; returns 0 when every step passed."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    workspace = Path(tempfile.mkdtemp(prefix="kl3m-desk-self-test-"))
    os.environ[paths.HOME_VARIABLE] = str(workspace / "profile")
    report: dict[str, Any] = {
        "ok": False,
        "version": __version__,
        "frozen": bool(getattr(sys, "frozen", False)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "steps": [],
    }
    report_path = report_path or Path.cwd() / "kl3m-desk-self-test.json"
    report["log_file"] = str(configure_logging())
    log_startup()
    with SocketBlocker() as blocker:
        try:
            _run_steps(report, workspace, model)
        except Exception as error:  # every failure ends up in the report
            report["steps"].append(
                {
                    "name": "unexpected error",
                    "ok": False,
                    "detail": f"{type(error).__name__}: {error}",
                }
            )
        report["socket_attempts"] = list(blocker.attempts)
    report["ok"] = bool(report["steps"]) and all(step["ok"] for step in report["steps"])
    report["ok"] = report["ok"] and not report["socket_attempts"]
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if sys.stdout is not None:
        print(f"Self-test {'passed' if report['ok'] else 'FAILED'}; report: {report_path}")
    return 0 if report["ok"] else 1


def _run_steps(report: dict[str, Any], workspace: Path, model: Path | None) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from kl3m_desk.generation import GenerationResult
    from kl3m_desk.params import SamplingParams
    from kl3m_desk.resources import bundled_model_dir, resource_path
    from kl3m_desk.settings import Settings
    from kl3m_desk.templates import load_library
    from kl3m_desk.ui.editor import document_text, to_document_newlines
    from kl3m_desk.ui.main_window import MainWindow

    steps: list[dict[str, Any]] = report["steps"]

    def step(name: str, ok: bool, started: float, detail: str = "") -> bool:
        steps.append(
            {
                "name": name,
                "ok": ok,
                "seconds": round(time.perf_counter() - started, 3),
                "detail": detail,
            }
        )
        return ok

    app = QApplication.instance() or QApplication(sys.argv[:1])
    started = time.perf_counter()
    library = load_library([resource_path("templates")])
    if not step(
        "templates",
        bool(library.templates) and not library.errors,
        started,
        f"{len(library.templates)} templates, {len(library.errors)} errors",
    ):
        return

    started = time.perf_counter()
    folder = model or bundled_model_dir()
    if folder is None:
        from kl3m_desk.tiny_model import write_tiny_model

        folder = write_tiny_model(workspace / "tiny-model")
        source = "tiny random model built on the spot"
    else:
        source = "bundled model" if model is None else "model given on the command line"
    report["model"] = {"folder": str(folder), "source": source}
    step("model folder", True, started, source)

    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(temperature=0.0, max_new_tokens=12)
    window = MainWindow(settings, library)
    window.show()

    def wait_for(success: Any, failure: Any, seconds: float) -> list[Any]:
        """Run the event loop until `success` or `failure` fires; returns the success arguments."""
        loop = QEventLoop()
        received: list[Any] = []

        def on_success(*args: Any) -> None:
            received.extend(args)
            loop.quit()

        success.connect(on_success)
        failure.connect(loop.quit)
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        success.disconnect(on_success)
        failure.disconnect(loop.quit)
        return received

    started = time.perf_counter()
    window.load_model(folder)
    if window.controller.model is None:
        wait_for(window.controller.model_ready, window.controller.load_failed, 600)
    loaded = window.controller.model
    if not step(
        "load model",
        loaded is not None,
        started,
        loaded.describe() if loaded else window.message_bar.label.text(),
    ):
        window.close()
        return
    assert loaded is not None
    report["model"].update(
        name=loaded.name,
        parameters=loaded.parameter_count,
        dtype=loaded.dtype_name,
        device=str(loaded.device),
    )

    started = time.perf_counter()
    window.editor.setPlainText(SAMPLE_TEXT)
    window.editor.moveCursor(window.editor.textCursor().MoveOperation.End)
    pieces: list[str] = []
    window.controller.text_ready.connect(pieces.append)
    window.generate()
    finished = wait_for(
        window.controller.generation_finished, window.controller.generation_failed, 600
    )
    result = finished[0] if finished else None
    text = document_text(window.editor.document())
    ok = isinstance(result, GenerationResult) and text == SAMPLE_TEXT + to_document_newlines(
        result.text
    )
    if isinstance(result, GenerationResult):
        report["generated_tokens"] = len(result.token_ids)
        report["tokens_per_second"] = round(result.tokens_per_second, 2)
    detail = f"{len(pieces)} pieces streamed"
    if result is None:
        detail += f"; {window.message_bar.label.text()}"
    if not step("stream completion", ok and bool(pieces), started, detail):
        window.close()
        return

    started = time.perf_counter()
    document = workspace / "self-test document.txt"
    saved = window.save_to(document)
    window.new_document()
    reopened = window.open_document(document, ask=False)
    same = document_text(window.editor.document()) == text
    step("save and reopen", saved and reopened and same, started, str(document))

    # A Word document goes through python-docx and its bundled template, which a frozen app
    # must carry as data files. The text is fixed, because random model output may contain
    # control characters that a .docx cannot hold.
    started = time.perf_counter()
    window.editor.document().setModified(False)
    window.new_document()
    window.editor.setPlainText(WORD_TEXT)
    word_document = workspace / "self-test document.docx"
    saved = window.save_to(word_document)
    window.new_document()
    reopened = window.open_document(word_document, ask=False)
    same = document_text(window.editor.document()) == WORD_TEXT
    step("save and reopen .docx", saved and reopened and same, started, str(word_document))

    window.editor.document().setModified(False)
    window.close()
    app.processEvents()
