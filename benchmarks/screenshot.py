"""Take a screenshot of the drafting window while a completion streams into a real document.

Run it on a real X display, for example a virtual one:

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot.py MODEL_DIR DOCUMENT \\
        docs/screenshot.png --after "2. TERM."

The script opens DOCUMENT, puts the cursor at the end of the paragraph that contains the --after
text, starts a completion and grabs the whole screen once --pieces pieces of text have arrived.
Settings go to a temporary profile, so the user's own settings are not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from kl3m_desk.params import SamplingParams
from kl3m_desk.resources import resource_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.main_window import MainWindow


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model folder")
    parser.add_argument("document", type=Path, help="UTF-8 text document to open")
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--after", required=True, help="text inside the paragraph to continue")
    parser.add_argument("--pieces", type=int, default=60, help="pieces of text to wait for")
    parser.add_argument("--timeout", type=int, default=300, help="seconds before giving up")
    return parser.parse_args()


def main() -> int:
    options = parse_arguments()
    os.environ.setdefault("KL3M_DESK_HOME", tempfile.mkdtemp(prefix="kl3m-desk-screenshot-"))
    app = QApplication(sys.argv[:1])
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(
        temperature=0.7, top_p=0.9, max_new_tokens=200, seed=2026
    )
    library = load_library([resource_path("templates")])
    window = MainWindow(settings, library)
    window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    window.show()
    if not window.open_document(options.document, ask=False):
        print(window.message_bar.label.text(), file=sys.stderr)
        return 1

    text = window.editor.toPlainText()
    anchor = text.find(options.after)
    if anchor < 0:
        print(f"{options.after!r} does not occur in {options.document}", file=sys.stderr)
        return 1
    end_of_paragraph = text.find("\n", anchor)
    pieces: list[str] = []
    status = {"code": 1}

    def start(_loaded: object) -> None:
        cursor = window.editor.textCursor()
        cursor.setPosition(end_of_paragraph if end_of_paragraph >= 0 else len(text))
        window.editor.setTextCursor(cursor)
        window.editor.centerCursor()
        governing_law = window.templates_panel.tree.findItems(
            "Governing Law", Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive
        )
        if governing_law:
            window.templates_panel.tree.setCurrentItem(governing_law[0])
        window.generate()

    def capture() -> None:
        window.editor.ensureCursorVisible()
        screen = QGuiApplication.primaryScreen()
        image = screen.grabWindow(0)
        options.output.parent.mkdir(parents=True, exist_ok=True)
        if image.save(str(options.output)):
            status["code"] = 0
            print(f"Wrote {options.output} ({image.width()}x{image.height()})")
        window.stop()
        window.editor.document().setModified(False)
        window.close()

    def received(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == options.pieces:
            QTimer.singleShot(150, capture)

    def failed(message: str) -> None:
        print(message, file=sys.stderr)
        window.editor.document().setModified(False)
        window.close()

    window.controller.model_ready.connect(start)
    window.controller.text_ready.connect(received)
    window.controller.load_failed.connect(failed)
    window.controller.generation_failed.connect(failed)
    window.load_model(options.model)
    QTimer.singleShot(options.timeout * 1000, lambda: failed("Timed out"))
    app.exec()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
