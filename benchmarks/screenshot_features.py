"""Take screenshots of the Alternatives panel and of review marks with the model's context.

Run it on a real X display, for example a virtual one:

    xvfb-run -s "-screen 0 1440x900x24" python benchmarks/screenshot_features.py MODEL_DIR \\
        DOCUMENT --shot both --alternatives-after "1. Definitions." \\
        --continue-after "4. Continuation." --continue-after "5. Master Framework Agreement." \\
        --pin "1. Definitions."

--shot alternatives writes alternatives.png into --output-dir (docs by default). The script puts
the cursor at the end of the paragraph that contains the --alternatives-after text, triggers Draft
→ Generate Alternatives, waits until every alternative has finished, chooses the second one with
Next Alternative and grabs the whole screen.

--shot review-context writes review-context.png into --output-dir. The script selects the paragraph
that contains the --pin text and triggers Pin Selection. For each --continue-after text it puts the
cursor at the end of that paragraph, triggers Generate and triggers Stop once --passage-pieces
pieces have arrived, so each passage stays unreviewed with its review mark. Then it turns Draft →
Show Model Context on and grabs the screen. During these generations max new tokens is
--context-max-new-tokens, which sets the size of the model's window. A new window takes the model's
positions minus max new tokens, so a large value leaves early text outside it.

--shot both takes both pictures with one model load, the review shot first. Settings go to a
temporary profile, so the user's own settings are not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, Qt, QTimer, SignalInstance
from PySide6.QtGui import QGuiApplication, QTextCursor
from PySide6.QtWidgets import QApplication, QPlainTextEdit

from kl3m_desk.params import SamplingParams
from kl3m_desk.resources import resource_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.main_window import MainWindow

# In the order --shot both takes them. The review shot goes first so that its window of the
# model's context is a new one, not one anchored by the alternatives' earlier request.
SHOTS = ("review-context", "alternatives")

# Height in pixels of the Alternatives dock, so that each card shows several lines of text.
ALTERNATIVES_DOCK_HEIGHT = 300

# Milliseconds to let the window repaint before the screen is grabbed.
SETTLE_MS = 500


class ScreenshotError(Exception):
    """A step of a screenshot failed. The message names the step and the cause."""


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model folder")
    parser.add_argument("document", type=Path, help="UTF-8 text document to open")
    parser.add_argument(
        "--shot",
        choices=(*SHOTS, "both"),
        default="both",
        help="which screenshot to take (default: both)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("docs"), help="folder for the PNG files"
    )
    parser.add_argument(
        "--alternatives-after",
        help="text inside the paragraph whose end gets the alternatives (for --shot alternatives)",
    )
    parser.add_argument(
        "--alternative-tokens", type=int, default=24, help="max new tokens of each alternative"
    )
    parser.add_argument(
        "--continue-after",
        action="append",
        default=[],
        help="text inside a paragraph to continue with Generate; repeat the option for more "
        "passages (for --shot review-context)",
    )
    parser.add_argument(
        "--pin", help="text inside the paragraph to pin (for --shot review-context)"
    )
    parser.add_argument(
        "--passage-pieces",
        type=int,
        default=10,
        help="pieces of text each generated passage gets before Stop",
    )
    parser.add_argument(
        "--context-max-new-tokens",
        type=int,
        default=600,
        help="max new tokens while the passages are generated and the context is shown",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2026,
        help="sampling seed; alternative N uses this seed plus N - 1",
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds to wait for each model step"
    )
    options = parser.parse_args()

    shots = SHOTS if options.shot == "both" else (options.shot,)
    if "alternatives" in shots and not options.alternatives_after:
        parser.error("--shot alternatives needs --alternatives-after")
    if "review-context" in shots and not (options.pin and options.continue_after):
        parser.error("--shot review-context needs --pin and at least one --continue-after")
    options.shots = shots
    return options


def wait_for(
    signal: SignalInstance,
    failures: tuple[SignalInstance, ...],
    timeout_seconds: int,
    step: str,
    accept: Callable[..., bool] | None = None,
) -> tuple[Any, ...]:
    """Run the event loop until `signal` fires and return its arguments.

    `accept`, when given, decides whether an emission counts. Raises ScreenshotError when one of
    `failures` fires first (its message argument is included) or after `timeout_seconds`.
    """
    loop = QEventLoop()
    outcome: dict[str, tuple[Any, ...]] = {}

    def received(*arguments: Any) -> None:
        if accept is None or accept(*arguments):
            outcome["result"] = arguments
            loop.quit()

    def failed(*arguments: Any) -> None:
        outcome["failure"] = arguments
        loop.quit()

    signal.connect(received)
    for failure in failures:
        failure.connect(failed)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(timeout_seconds * 1000)
    loop.exec()
    timer.stop()
    signal.disconnect(received)
    for failure in failures:
        failure.disconnect(failed)

    if "failure" in outcome:
        raise ScreenshotError(f"{step} failed: {' '.join(map(str, outcome['failure']))}")
    if "result" not in outcome:
        raise ScreenshotError(f"{step} timed out after {timeout_seconds} s")
    return outcome["result"]


def pause(milliseconds: int) -> None:
    """Run the event loop for `milliseconds`, so that timers fire and the window repaints."""
    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()


def paragraph_bounds(window: MainWindow, inside: str) -> tuple[int, int]:
    """Return the start and end positions of the paragraph that contains `inside`."""
    document = window.editor.document()
    found = document.find(inside)
    if found.isNull():
        raise ScreenshotError(f"{inside!r} does not occur in the document")
    block = found.block()
    return block.position(), block.position() + block.length() - 1


def place_cursor(window: MainWindow, position: int, anchor: int | None = None) -> None:
    """Move the editor's cursor to `position`, selecting from `anchor` when it is given."""
    cursor = window.editor.textCursor()
    if anchor is None:
        cursor.setPosition(position)
    else:
        cursor.setPosition(anchor)
        cursor.setPosition(position, QTextCursor.MoveMode.KeepAnchor)
    window.editor.setTextCursor(cursor)
    window.editor.setFocus()


def set_max_new_tokens(window: MainWindow, max_new_tokens: int) -> None:
    """Set max new tokens in the Sampling panel, as the user does with its slider."""
    panel = window.parameters_panel
    panel.set_params(panel.params().replace(max_new_tokens=max_new_tokens))


def grab_screen(output: Path) -> None:
    """Let the window repaint, then save the whole screen to `output`."""
    pause(SETTLE_MS)
    image = QGuiApplication.primaryScreen().grabWindow(0)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(output)):
        raise ScreenshotError(f"Could not write {output}")
    print(f"Wrote {output} ({image.width()}x{image.height()})")


def open_document(window: MainWindow, document: Path) -> None:
    """Open `document` fresh, discarding the changes of an earlier shot."""
    window.editor.document().setModified(False)
    if not window.open_document(document, ask=False):
        raise ScreenshotError(window.message_bar.label.text())


def take_alternatives(window: MainWindow, options: argparse.Namespace) -> None:
    """Generate alternatives at the end of a paragraph, choose the second and grab the screen."""
    open_document(window, options.document)
    set_max_new_tokens(window, options.alternative_tokens)
    _start, end = paragraph_bounds(window, options.alternatives_after)
    place_cursor(window, end)
    window.editor.centerCursor()

    commands = window.alternatives
    commands.generate_action.trigger()
    controller = window.controller
    (results,) = wait_for(
        controller.alternatives_finished,
        (controller.generation_failed,),
        options.timeout,
        "Generate Alternatives",
    )
    for index, result in enumerate(results, start=1):
        print(f"Alternative {index}, {len(result.token_ids)} tokens: {result.text!r}")
    if len(commands.panel.alternatives) < 2:
        raise ScreenshotError(
            f"Only {len(commands.panel.alternatives)} alternatives arrived; at least 2 are needed"
        )

    window.resizeDocks([commands.dock], [ALTERNATIVES_DOCK_HEIGHT], Qt.Orientation.Vertical)
    commands.next_action.trigger()
    # A card scrolls along as its text streams in. The random-weight model often writes long
    # runs of line breaks, which would leave only the end of a card's text in view.
    for view in commands.panel.findChildren(QPlainTextEdit):
        view.verticalScrollBar().setValue(0)
    grab_screen(options.output_dir / "alternatives.png")
    commands.dock.hide()


def generate_passage(window: MainWindow, options: argparse.Namespace, after: str) -> None:
    """Continue the paragraph that contains `after`, pressing Stop after a few pieces."""
    _start, end = paragraph_bounds(window, after)
    place_cursor(window, end)
    controller = window.controller
    pieces = {"count": 0}

    def piece_arrived(_piece: str) -> None:
        pieces["count"] += 1
        if pieces["count"] == options.passage_pieces:
            window.stop_action.trigger()

    controller.text_ready.connect(piece_arrived)
    try:
        window.generate_action.trigger()
        (result,) = wait_for(
            controller.generation_finished,
            (controller.generation_failed,),
            options.timeout,
            "Generate",
        )
    finally:
        controller.text_ready.disconnect(piece_arrived)
    print(f"Passage after {after!r} ({result.stop_reason}): {result.text!r}")


def take_review_context(window: MainWindow, options: argparse.Namespace) -> None:
    """Pin a paragraph, generate unreviewed passages, show the model's context and grab."""
    open_document(window, options.document)
    set_max_new_tokens(window, options.context_max_new_tokens)

    start, end = paragraph_bounds(window, options.pin)
    place_cursor(window, end, anchor=start)
    window.context_view.pin_action.trigger()
    if not window.context_view.pins.pins():
        raise ScreenshotError(f"Pin Selection pinned nothing at {options.pin!r}")

    for after in options.continue_after:
        generate_passage(window, options, after)
    passages = window.review.marks.unreviewed()
    if not passages:
        raise ScreenshotError("No generated passage is marked unreviewed")

    last = max(passages, key=lambda passage: passage.end)
    place_cursor(window, last.end)
    window.editor.centerCursor()
    window.context_view.show_action.trigger()
    pause(SETTLE_MS)
    print(window.review.counter_label.text())
    print(window.context_view.label.text())
    grab_screen(options.output_dir / "review-context.png")
    window.context_view.show_action.trigger()  # turns the view off for a later shot


def main() -> int:
    options = parse_arguments()
    os.environ.setdefault("KL3M_DESK_HOME", tempfile.mkdtemp(prefix="kl3m-desk-screenshot-"))
    app = QApplication(sys.argv[:1])
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(
        temperature=0.7, top_p=0.9, seed=options.seed
    )
    settings.suggestions.inline = False
    settings.limitations_shown = True
    library = load_library([resource_path("templates")])
    window = MainWindow(settings, library)
    window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    window.show()

    status = 0
    try:
        window.load_model(options.model)
        wait_for(
            window.controller.model_ready,
            (window.controller.load_failed,),
            options.timeout,
            f"Loading {options.model}",
        )
        window.activateWindow()
        for shot in options.shots:
            if shot == "alternatives":
                take_alternatives(window, options)
            else:
                take_review_context(window, options)
    except ScreenshotError as error:
        print(error, file=sys.stderr)
        status = 1
    window.editor.document().setModified(False)
    window.close()
    app.processEvents()
    return status


if __name__ == "__main__":
    sys.exit(main())
