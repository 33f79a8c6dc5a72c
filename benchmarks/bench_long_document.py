"""Measure opening and streaming into a short and a very long document in the real window.

Usage: python benchmarks/bench_long_document.py [--output docs/benchmarks.md] [--shared DIR]
       [--insertions 300] [--no-write]

Two documents are built from `fixtures/documents/outsourcing_agreement_long.txt` in the shared
folder (--shared, else $KL3M_DESK_SHARED, else `shared` beside the repository), repeated and cut to
2,000 and 1,000,000 characters. Each is saved as a file and opened in the real `MainWindow` with
the tiny random model (kl3m_desk.tiny_model, with the kl3m-001-32k tokenizer) loaded through the
app's own loading code.

A completion then streams at the end of the document and in its middle. The tiny model is forced
to write real legal text, so its pieces pass through the inference thread's `StreamDecoder` and
the controller's `text_ready` signal exactly as a completion's pieces do: single spaces, words,
punctuation. On the GUI thread, the benchmark measures:
- the cost of each streamed insertion: the time from the first to the last slot connected to
  `text_ready`, which covers the editor insertion, review marks, pinned passages, inline
  suggestions and every slot those changes trigger synchronously;
- the longest event-loop stall while streaming: the longest gap between two ticks of a 5 ms
  `QTimer`, which also covers layout and painting;
- the time to open each document, from `open_document` until the event loop is idle again;
- the cost of a keystroke in the middle of the document and of scrolling down one page.

The figures go to their own section of a Markdown page (default docs/benchmarks.md), with the
ratio of the 1,000,000-character document's figures to the 2,000-character one's.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "")
if not os.environ["QT_QPA_PLATFORM"]:
    del os.environ["QT_QPA_PLATFORM"]

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from bench_inference import describe_machine  # noqa: E402
from report_page import replace_section  # noqa: E402

DEFAULT_SHARED = REPOSITORY.parent / "shared"
SHARED_ENV = "KL3M_DESK_SHARED"
DEFAULT_OUTPUT = REPOSITORY / "docs" / "benchmarks.md"
REPORT_SECTION = "long-document"  # this script's section of the output page
SOURCE_NAME = "outsourcing_agreement_long.txt"
SIZES = (2_000, 1_000_000)
HEARTBEAT_MS = 5
TOKEN_INTERVAL_SECONDS = 0.02  # the pause before each forced token: at most 50 tokens per second
TARGET_RATIO = 1.5
WAIT_SECONDS = 120.0
TYPED_TEXT = " and the Customer shall pay the Charges within thirty (30) days of the invoice date"
SCROLL_STEPS = 20  # the 2,000-character document is shorter than this many pages


@dataclass(frozen=True)
class StreamFigures:
    """Figures of one streamed completion, in milliseconds."""

    insertions: int
    start_ms: float  # the window's `generate()` call, before any piece
    median_ms: float
    p95_ms: float
    max_ms: float
    longest_stall_ms: float


@dataclass(frozen=True)
class StepFigures:
    """Median and 95th percentile of repeated steps such as keystrokes, in milliseconds."""

    steps: int
    median_ms: float
    p95_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> StepFigures:
        """Summarize step durations given in seconds."""
        milliseconds = [value * 1000 for value in seconds]
        return cls(
            len(milliseconds), statistics.median(milliseconds), percentile(milliseconds, 0.95)
        )


@dataclass(frozen=True)
class DocumentFigures:
    """Figures of one document size."""

    characters: int
    lines: int
    open_seconds: float
    streams: dict[str, StreamFigures]  # by cursor position: "end", "middle"
    typing: StepFigures  # one keystroke in the middle, with the event loop run after it
    scrolling: StepFigures  # one page down, painted


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown page whose long-document section is replaced (default: docs/benchmarks.md)",
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=None,
        help=f"shared folder with kl3m-001-32k and fixtures/documents (default: ${SHARED_ENV}, "
        "else 'shared' beside the repository)",
    )
    parser.add_argument(
        "--insertions",
        type=int,
        default=300,
        help="streamed pieces measured per completion (default: 300)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the report without writing the page"
    )
    arguments = parser.parse_args(argv)
    if arguments.insertions < 20:
        parser.error("--insertions must be at least 20, so that a 95th percentile means something")
    return arguments


def shared_folder(option: Path | None) -> Path:
    """Return the shared folder from the option, the environment or the default."""
    if option is not None:
        return option.expanduser()
    return Path(os.environ.get(SHARED_ENV) or DEFAULT_SHARED).expanduser()


def build_document(source: str, size: int) -> str:
    """Return `source` repeated and cut to exactly `size` characters, ending at a line's end."""
    repeats = size // len(source) + 1
    text = (source.rstrip("\n") + "\n\n") * repeats
    return text[:size]


def percentile(values: list[float], share: float) -> float:
    """Return the nearest-rank percentile `share` (0 to 1) of `values`."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))
    return ordered[index]


class StreamProbe:
    """Times the slots of `text_ready` and the gaps of a heartbeat timer while armed."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.armed = False
        self.costs: list[float] = []
        self.ticks: list[float] = []
        self._started = 0.0
        self.heartbeat = QTimer()
        self.heartbeat.setInterval(HEARTBEAT_MS)
        self.heartbeat.timeout.connect(self._tick)

    def arm(self) -> None:
        """Start recording a new completion."""
        self.costs = []
        self.ticks = [time.perf_counter()]
        self.armed = True
        self.heartbeat.start()

    def disarm(self) -> None:
        """Stop recording."""
        self.armed = False
        self.heartbeat.stop()
        self.ticks.append(time.perf_counter())

    def before_slots(self, _piece: str) -> None:
        """First slot of `text_ready`: connected before the window's."""
        self._started = time.perf_counter()
        if self.armed and not self.costs:
            self.ticks = [self._started]  # stalls count from the first piece on

    def after_slots(self, _piece: str) -> None:
        """Last slot of `text_ready`: connected after the window's."""
        if self.armed:
            self.costs.append(time.perf_counter() - self._started)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def longest_stall(self) -> float:
        """Return the longest gap between two heartbeat ticks, in seconds."""
        return max(later - earlier for earlier, later in itertools.pairwise(self.ticks))


def wait_until(app: object, condition: object, what: str) -> None:
    """Process events until `condition()` is true, or exit after WAIT_SECONDS."""
    from PySide6.QtWidgets import QApplication

    assert isinstance(app, QApplication)
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"Timed out after {WAIT_SECONDS:.0f} s waiting for {what}.")
        app.processEvents()
        time.sleep(0.002)


def settle(app: object) -> None:
    """Process events until none are left, including deferred layout and painting."""
    from PySide6.QtWidgets import QApplication

    assert isinstance(app, QApplication)
    for _ in range(5):
        app.processEvents()
        app.sendPostedEvents()


def main(argv: Sequence[str] | None = None) -> None:
    """Open both documents, stream into each at two positions and write the report."""
    arguments = parse_arguments(argv)
    shared = shared_folder(arguments.shared)
    source_path = shared / "fixtures" / "documents" / SOURCE_NAME
    tokenizer_dir = shared / "kl3m-001-32k"
    if not source_path.is_file() or not (tokenizer_dir / "tokenizer.json").is_file():
        sys.exit(
            f"{source_path} or {tokenizer_dir / 'tokenizer.json'} is missing. Pass --shared or "
            f"set {SHARED_ENV} to the folder that contains fixtures/documents and kl3m-001-32k."
        )
    source = source_path.read_text(encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="kl3m-long-document-") as work:
        os.environ["KL3M_DESK_HOME"] = str(Path(work) / "profile")  # never the real profile
        started = time.perf_counter()
        figures = run(Path(work), source, tokenizer_dir, arguments.insertions)
        wall = time.perf_counter() - started

    command = "python benchmarks/bench_long_document.py"
    if arguments.insertions != 300:
        command += f" --insertions {arguments.insertions}"
    report = render_report(describe_machine(), figures, command, arguments.insertions, wall)
    print(report)
    if not arguments.no_write:
        replace_section(arguments.output, REPORT_SECTION, report)


def run(work: Path, source: str, tokenizer_dir: Path, insertions: int) -> list[DocumentFigures]:
    """Measure every document size in one window and return the figures."""
    from PySide6.QtGui import QTextCursor
    from PySide6.QtWidgets import QApplication

    from kl3m_desk.settings import Settings
    from kl3m_desk.templates import load_library
    from kl3m_desk.tiny_model import write_tiny_model
    from kl3m_desk.ui.inference import InferenceController
    from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
    from tests.forced_text import ForcedText

    app = QApplication.instance() or QApplication([])
    model_dir = write_tiny_model(work / "tiny model", tokenizer_dir)

    probe = StreamProbe()
    controller = InferenceController()
    controller.text_ready.connect(probe.before_slots)
    settings = Settings.load()
    settings.limitations_shown = True
    settings.sampling = settings.sampling.replace(
        temperature=0.0, max_new_tokens=insertions + 100, stop_at="none"
    )
    window = MainWindow(settings, load_library(), controller)
    controller.text_ready.connect(probe.after_slots)
    window.ask_unsaved_changes = lambda: UnsavedChoice.DISCARD  # type: ignore[method-assign]
    window.resize(1280, 820)
    window.show()
    window.load_model(model_dir)
    wait_until(app, lambda: controller.model is not None, "the tiny model to load")
    loaded = controller.model
    assert loaded is not None

    # The completion's text: legal text long enough for every measured piece.
    completion = source[len(source) // 3 :][: insertions * 12]
    forced = ForcedText(loaded, completion)
    pace = threading.Event()
    original_forward = forced.forward

    def paced_forward(cache: object, ids: Sequence[int]) -> object:
        pace.wait(TOKEN_INTERVAL_SECONDS)
        return original_forward(cache, ids)  # type: ignore[arg-type]

    loaded.engine.forward = paced_forward  # type: ignore[method-assign, assignment]

    results = []
    for size in SIZES:
        text = build_document(source, size)
        path = work / f"agreement {size} characters.txt"
        path.write_text(text, encoding="utf-8")
        settle(app)
        opened = time.perf_counter()
        if not window.open_document(path, ask=False):
            sys.exit(f"The window could not open {path}; see the message bar.")
        settle(app)
        open_seconds = time.perf_counter() - opened

        streams = {}
        for where, position in (("end", len(text)), ("middle", len(text) // 2)):
            cursor = window.editor.textCursor()
            cursor.setPosition(position, QTextCursor.MoveMode.MoveAnchor)
            window.editor.setTextCursor(cursor)
            window.editor.ensureCursorVisible()
            settle(app)
            streams[where] = stream_once(app, window, probe, insertions)
            window.undo()  # remove the completion, so the next one sees the same document
            settle(app)
        typing = type_keys(app, window, len(text) // 2, TYPED_TEXT)
        scrolling = scroll_pages(app, window, SCROLL_STEPS)
        results.append(
            DocumentFigures(
                characters=size,
                lines=window.editor.document().blockCount(),
                open_seconds=open_seconds,
                streams=streams,
                typing=typing,
                scrolling=scrolling,
            )
        )
        print(f"  {size:,} characters done", file=sys.stderr, flush=True)

    window.editor.document().setModified(False)
    window.close()
    controller.shutdown()
    return results


def type_keys(app: object, window: object, position: int, text: str) -> StepFigures:
    """Type `text` at `position` one key at a time and return the cost of each keystroke."""
    from PySide6.QtGui import QTextCursor
    from PySide6.QtTest import QTest

    from kl3m_desk.ui.main_window import MainWindow

    assert isinstance(window, MainWindow)
    cursor = window.editor.textCursor()
    cursor.setPosition(position, QTextCursor.MoveMode.MoveAnchor)
    window.editor.setTextCursor(cursor)
    window.editor.ensureCursorVisible()
    settle(app)
    durations = []
    for character in text:
        started = time.perf_counter()
        QTest.keyClick(window.editor, character)
        settle(app)
        durations.append(time.perf_counter() - started)
    return StepFigures.of(durations)


def scroll_pages(app: object, window: object, steps: int) -> StepFigures:
    """Scroll down one page at a time from the top, painting each page, and time each step."""
    from kl3m_desk.ui.main_window import MainWindow

    assert isinstance(window, MainWindow)
    bar = window.editor.verticalScrollBar()
    bar.setValue(0)
    settle(app)
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        bar.setValue(bar.value() + bar.pageStep())
        window.editor.viewport().repaint()
        settle(app)
        durations.append(time.perf_counter() - started)
    return StepFigures.of(durations)


def stream_once(app: object, window: object, probe: StreamProbe, insertions: int) -> StreamFigures:
    """Run one forced completion at the cursor and return its figures."""
    from kl3m_desk.ui.main_window import MainWindow

    assert isinstance(window, MainWindow)
    probe.arm()
    started = time.perf_counter()
    window.generate()
    start_seconds = time.perf_counter() - started
    wait_until(
        app,
        lambda: len(probe.costs) >= insertions or not window.controller.is_generating,
        f"{insertions} streamed pieces",
    )
    probe.disarm()
    window.stop()
    costs = probe.costs[:insertions]
    if len(costs) < insertions:
        sys.exit(f"The completion ended after {len(costs)} of {insertions} pieces.")
    milliseconds = [cost * 1000 for cost in costs]
    return StreamFigures(
        insertions=len(milliseconds),
        start_ms=start_seconds * 1000,
        median_ms=statistics.median(milliseconds),
        p95_ms=percentile(milliseconds, 0.95),
        max_ms=max(milliseconds),
        longest_stall_ms=probe.longest_stall() * 1000,
    )


def render_report(
    machine: dict[str, str],
    figures: list[DocumentFigures],
    command: str,
    insertions: int,
    wall_seconds: float,
) -> str:
    """Return the Markdown section with the figures and the ratios of the sizes."""
    short, long = figures[0], figures[-1]
    rows = [
        "| Document | Cursor | Start | Median per insertion | p95 | Max | Longest stall |",
        "|---|---|---|---|---|---|---|",
    ]
    for document in figures:
        for where, stream in document.streams.items():
            rows.append(
                f"| {document.characters:,} characters | {where} | {stream.start_ms:.1f} ms "
                f"| {stream.median_ms:.3f} ms "
                f"| {stream.p95_ms:.3f} ms | {stream.max_ms:.2f} ms "
                f"| {stream.longest_stall_ms:.1f} ms |"
            )
    ratio_rows = [
        "| Cursor | Median | p95 | Longest stall | Target |",
        "|---|---|---|---|---|",
    ]
    for where in short.streams:
        small, large = short.streams[where], long.streams[where]
        ratio_rows.append(
            f"| {where} | {large.median_ms / small.median_ms:.2f}x "
            f"| {large.p95_ms / small.p95_ms:.2f}x "
            f"| {large.longest_stall_ms / small.longest_stall_ms:.2f}x "
            f"| median within {TARGET_RATIO}x |"
        )
    open_rows = [
        "| Document | Lines | Open | Keystroke, median | p95 | Page down, median | p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for document in figures:
        open_rows.append(
            f"| {document.characters:,} characters | {document.lines:,} "
            f"| {document.open_seconds:.2f} s "
            f"| {document.typing.median_ms:.2f} ms | {document.typing.p95_ms:.2f} ms "
            f"| {document.scrolling.median_ms:.2f} ms | {document.scrolling.p95_ms:.2f} ms |"
        )
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(rows)
    ratios = "\n".join(ratio_rows)
    opening = "\n".join(open_rows)
    return f"""## Long documents

Measured on {date} by `benchmarks/bench_long_document.py`, in a run that took
{wall_seconds:.0f} s, with Qt's `{os.environ.get("QT_QPA_PLATFORM", "default")}` platform.

### Command

```
{command}
```

### Machine

{machine_lines}

NOTE: the run shared this machine's {machine["Logical CPUs"]} logical CPUs with other work, so
single figures move between runs. Compare the ratios, which come from one run.

### What was measured

The documents are the outsourcing agreement fixture repeated and cut to
{short.characters:,} and {long.characters:,} characters, opened from a file in the real window.
A completion of {insertions} pieces then streams at the end of the document and in its middle:
the tiny random model (kl3m-002-520m's architecture and the kl3m-001-32k tokenizer) is forced
to write legal text, one token every {TOKEN_INTERVAL_SECONDS * 1000:.0f} ms, so the pieces pass
through the inference thread and `text_ready` as a completion's do. The cost per insertion is
the time from the first to the last slot of `text_ready`. The longest stall is the longest gap
between two ticks of a {HEARTBEAT_MS} ms timer from the first piece to the last, which includes
layout and painting. Start is the window's `generate()` call, which reads the text before the
cursor once per completion. Opening is the time from `open_document` until the event loop is idle.
A keystroke is one of {len(TYPED_TEXT)} characters typed in the middle of the document with
`QTest.keyClick`, until the event loop is idle. A page down moves the scroll bar one page and
paints the editor, {SCROLL_STEPS} times from the top; in the short document most of these steps
find the end already reached.

### Ratio of the {long.characters:,}-character document to the {short.characters:,}-character one

{ratios}

### Streaming

{table}

### Opening, typing and scrolling

{opening}
"""


if __name__ == "__main__":
    main()
