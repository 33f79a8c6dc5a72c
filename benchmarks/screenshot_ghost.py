"""Take a screenshot of the drafting window showing an inline suggestion in a real document.

Run it on a real X display, for example a virtual one:

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot_ghost.py MODEL_DIR \\
        DOCUMENT docs/ghost-text.png --after "continue in full force and effect"

The script opens DOCUMENT, turns Draft → Inline Suggestions on, puts the cursor at the end of the
paragraph that contains the --after text and presses Generate. Once the suggestion is complete it
accepts --accept-words words of it, so the picture shows accepted text with its review mark next
to the grey suggestion, and grabs the whole screen. Settings go to a temporary profile, so the
user's own settings are not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from kl3m_desk.generation import GenerationResult
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
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="length of the suggestion, in tokens"
    )
    parser.add_argument(
        "--accept-words", type=int, default=2, help="words of the suggestion to accept first"
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds before giving up")
    return parser.parse_args()


def main() -> int:
    options = parse_arguments()
    os.environ.setdefault("KL3M_DESK_HOME", tempfile.mkdtemp(prefix="kl3m-desk-screenshot-"))
    app = QApplication(sys.argv[:1])
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(
        temperature=0.7, top_p=0.9, max_new_tokens=options.max_new_tokens, seed=2026
    )
    settings.suggestions.inline = True
    settings.limitations_shown = True
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
    status = {"code": 1}

    def start(_loaded: object) -> None:
        cursor = window.editor.textCursor()
        cursor.setPosition(end_of_paragraph if end_of_paragraph >= 0 else len(text))
        window.editor.setTextCursor(cursor)
        window.editor.centerCursor()
        window.activateWindow()
        window.editor.setFocus()
        window.generate()

    def suggestion_ready(result: GenerationResult) -> None:
        if not window.suggestions.owns_latest_run():
            return
        print(f"Suggestion of {len(result.token_ids)} tokens: {result.text!r}")
        for _ in range(options.accept_words):
            window.suggestions.accept_word()
        QTimer.singleShot(300, capture)

    def capture() -> None:
        if not window.suggestions.shown:
            print("No suggestion is shown at the cursor", file=sys.stderr)
        else:
            image = QGuiApplication.primaryScreen().grabWindow(0)
            options.output.parent.mkdir(parents=True, exist_ok=True)
            if image.save(str(options.output)):
                status["code"] = 0
                print(f"Wrote {options.output} ({image.width()}x{image.height()})")
        window.editor.document().setModified(False)
        window.close()

    def failed(message: str) -> None:
        print(message, file=sys.stderr)
        window.editor.document().setModified(False)
        window.close()

    window.controller.model_ready.connect(start)
    window.controller.generation_finished.connect(suggestion_ready)
    window.controller.load_failed.connect(failed)
    window.controller.generation_failed.connect(failed)
    window.load_model(options.model)
    QTimer.singleShot(options.timeout * 1000, lambda: failed("Timed out"))
    app.exec()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
