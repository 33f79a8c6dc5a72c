"""Autosave journals, the recovery prompt and safe saving, with real files, windows, processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtGui import QTextCursor
from pytestqt.qtbot import QtBot

from kl3m_desk import journal as journal_module
from kl3m_desk.documents import DocumentError, TextDocument, save_document
from kl3m_desk.journal import (
    INSTANCE_ID,
    InstanceLock,
    Journal,
    JournalWriter,
    find_recoverable,
    journal_path,
    read_journal,
    recovery_dir,
    write_journal,
)
from kl3m_desk.paths import HOME_VARIABLE
from kl3m_desk.review import sidecar_path
from kl3m_desk.settings import Settings
from kl3m_desk.templates import load_library
from kl3m_desk.ui.autosave import JOURNAL_DELAY_MS
from kl3m_desk.ui.editor import document_text
from kl3m_desk.ui.main_window import MainWindow, UnsavedChoice
from kl3m_desk.ui.recovery import RecoveryChoice, RecoveryDialog, offer_recovery
from tests.conftest import REPOSITORY, read_only_folder

DOCUMENT = (
    "MASTER SERVICES AGREEMENT\n\n"
    "1. Definitions. “Services” means the services described in each Statement of Work.\n\n"
    "2. Fees. The Customer shall pay the fees within thirty (30) days of each invoice.\n"
)

# Folder and file names with spaces and non-ASCII characters, as lawyers name them.
FOLDER_NAME = "Verträge & Entwürfe"
FILE_NAME = "Übereinkunft 1.txt"


@pytest.fixture(autouse=True)
def discard_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer "Discard" to the unsaved-changes question, which would block a test run."""
    monkeypatch.setattr(MainWindow, "ask_unsaved_changes", lambda _self: UnsavedChoice.DISCARD)


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user profile folder whose path has spaces and non-ASCII characters."""
    home = tmp_path / "Profil mit Ümläuten"
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home


@pytest.fixture
def document_file(tmp_path: Path) -> Path:
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    path = folder / FILE_NAME
    path.write_text(DOCUMENT, encoding="utf-8")
    return path


def make_window(qtbot: QtBot, **sampling: object) -> MainWindow:
    settings = Settings.load()
    settings.limitations_shown = True
    settings.sampling = settings.sampling.replace(**sampling)
    window = MainWindow(settings, load_library())
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot: QtBot, profile: Path) -> Iterator[MainWindow]:
    created = make_window(qtbot)
    yield created
    created.autosave.close()
    created.controller.shutdown()


def type_text(window: MainWindow, text: str) -> None:
    cursor = window.editor.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    cursor.insertText(text)
    window.editor.setTextCursor(cursor)


def journal_files(home: Path | None = None) -> list[Path]:
    folder = home / "data" / "recovery" if home is not None else recovery_dir()
    return sorted(folder.glob("*.journal.json")) if folder.is_dir() else []


def wait_for_journal(qtbot: QtBot, window: MainWindow, contains: str) -> Journal:
    def written() -> bool:
        window.autosave.writer.flush(timeout=5)
        path = window.autosave.path
        return path.is_file() and contains in read_journal(path).text

    qtbot.waitUntil(written, timeout=10_000)
    return read_journal(window.autosave.path)


def click_later(button_owner: RecoveryDialog, choice: RecoveryChoice) -> None:
    """Press a button of `button_owner` once its event loop runs."""
    button = {
        RecoveryChoice.RECOVER: button_owner.recover_button,
        RecoveryChoice.NOT_NOW: button_owner.not_now_button,
        RecoveryChoice.DISCARD: button_owner.discard_button,
    }[choice]
    QTimer.singleShot(0, button.click)


# --- journal files ----------------------------------------------------------------------------


def test_journal_round_trip_keeps_fields(profile: Path, document_file: Path) -> None:
    written = Journal(
        journal_id="abc",
        text="Text with § 2.1 and 東京 🙂\nsecond line",
        file_path=document_file,
        newline="\r\n",
        last_saved="2026-12-01T10:00:00+00:00",
        field_values={"Party": "Müller & Söhne GmbH"},
    )
    path = write_journal(written)
    assert path == journal_path("abc")
    assert str(profile) in str(path)
    read = read_journal(path)
    assert read.text == written.text
    assert read.file_path == document_file
    assert read.newline == "\r\n"
    assert read.last_saved == written.last_saved
    assert read.field_values == {"Party": "Müller & Söhne GmbH"}
    assert read.instance_id == INSTANCE_ID
    assert read.display_name == FILE_NAME


def test_writer_keeps_request_order(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    try:
        writer.write(Journal(journal_id="one", text="first", file_path=None))
        writer.delete("one")
        writer.write(Journal(journal_id="two", text="second", file_path=None))
        assert writer.flush(timeout=10)
        assert not journal_path("one", tmp_path).exists()
        writer.delete("two")
        writer.write(Journal(journal_id="two", text="third", file_path=None))
        assert writer.flush(timeout=10)
        assert read_journal(journal_path("two", tmp_path)).text == "third"
    finally:
        writer.close()


def test_writer_reports_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "not a folder"
    blocked.write_text("a file where the recovery folder should be", encoding="utf-8")
    failures: list[tuple[Path, OSError]] = []
    writer = JournalWriter(blocked, on_error=lambda path, error: failures.append((path, error)))
    try:
        writer.write(Journal(journal_id="x", text="text", file_path=None))
        assert writer.flush(timeout=10)
    finally:
        writer.close()
    assert len(failures) == 1
    assert failures[0][0] == journal_path("x", blocked)


def test_invalid_journal_renamed_and_reported(profile: Path) -> None:
    recovery_dir().mkdir(parents=True)
    broken = recovery_dir() / "broken.journal.json"
    broken.write_text('{"format": "kl3m-desk recovery journal", "version": 1, "te', "utf-8")
    scan = find_recoverable(exclude_instance=None)
    assert scan.journals == []
    assert len(scan.problems) == 1
    assert str(broken) in scan.problems[0]
    assert not broken.exists()
    assert len(list(recovery_dir().glob("broken.journal.json.invalid-*"))) == 1


LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kl3m_desk.journal import InstanceLock
    lock = InstanceLock(Path(sys.argv[1]), sys.argv[2])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_live_instance_journal_not_offered(profile: Path) -> None:
    folder = recovery_dir()
    folder.mkdir(parents=True)
    other_instance = "other-instance"
    write_journal(
        Journal(journal_id="live", text="still open", file_path=None, instance_id=other_instance)
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(folder), other_instance],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        scan = find_recoverable(exclude_instance=None)
        assert scan.journals == []
        assert scan.live == 1
        assert (folder / f"{other_instance}.lock").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    scan = find_recoverable(exclude_instance=None)
    assert [journal.text for journal in scan.journals] == ["still open"]
    assert not (folder / f"{other_instance}.lock").exists()  # stale lock removed


def test_own_lock_released_on_release(profile: Path) -> None:
    lock = InstanceLock(instance_id="mine")
    lock.acquire()
    assert InstanceLock.is_held(lock.path)
    lock.release()
    assert not lock.path.exists()
    assert not InstanceLock.is_held(lock.path)


# --- autosave in the window -------------------------------------------------------------------


def test_typing_journals_document(qtbot: QtBot, window: MainWindow, document_file: Path) -> None:
    assert window.open_document(document_file, ask=False)
    assert journal_files() == []  # opened without changes: nothing to recover
    type_text(window, "3. Term. This Agreement starts on the Effective Date.")
    journal = wait_for_journal(qtbot, window, "3. Term.")
    assert journal.text == DOCUMENT + "3. Term. This Agreement starts on the Effective Date."
    assert journal.file_path == document_file
    saved = datetime.fromtimestamp(document_file.stat().st_mtime).astimezone()
    assert journal.last_saved is not None
    assert abs((datetime.fromisoformat(journal.last_saved) - saved).total_seconds()) < 1
    assert FOLDER_NAME in str(journal.file_path)


def test_continuous_changes_still_journaled(qtbot: QtBot, window: MainWindow) -> None:
    # A change every 100 ms, as streamed tokens arrive: a timer restarted by each change would
    # never fire, so the journal must appear while the changes go on.
    window.autosave.delay_ms = 500
    started = time.monotonic()
    journaled_while_typing = False
    for count in range(40):
        type_text(window, f"word{count} ")
        qtbot.wait(100)
        window.autosave.writer.flush(timeout=5)
        if window.autosave.path.is_file():
            journaled_while_typing = True
            break
    assert journaled_while_typing
    assert time.monotonic() - started < 2.0
    assert read_journal(window.autosave.path).file_path is None


def test_saving_deletes_journal(qtbot: QtBot, window: MainWindow, document_file: Path) -> None:
    window.open_document(document_file, ask=False)
    type_text(window, "Added clause.")
    wait_for_journal(qtbot, window, "Added clause.")
    assert window.save()
    window.autosave.writer.flush(timeout=5)
    assert journal_files() == []
    assert document_file.read_text(encoding="utf-8") == DOCUMENT + "Added clause."


def test_discarding_on_close_deletes_journal(qtbot: QtBot, profile: Path) -> None:
    window = make_window(qtbot)
    type_text(window, "Draft that the user throws away.")
    wait_for_journal(qtbot, window, "throws away")
    window.close()  # the autouse fixture chooses Discard
    assert journal_files() == []


def test_undo_to_saved_text_deletes_journal(qtbot: QtBot, window: MainWindow) -> None:
    type_text(window, "Temporary words.")
    wait_for_journal(qtbot, window, "Temporary words.")
    window.editor.undo()
    assert not window.editor.document().isModified()
    window.autosave.writer.flush(timeout=5)
    assert journal_files() == []


def test_journal_write_failure_reported(qtbot: QtBot, window: MainWindow, profile: Path) -> None:
    (profile / "data").mkdir(parents=True, exist_ok=True)
    (profile / "data" / "recovery").write_text("not a folder", encoding="utf-8")
    type_text(window, "Cannot be journaled.")
    window.autosave.journal_now()
    window.autosave.writer.flush(timeout=5)
    qtbot.waitUntil(lambda: "Autosave could not write" in window.message_bar.label.text())
    assert "Save the document" in window.message_bar.label.text()


def test_large_document_journal_gui_time(qtbot: QtBot, window: MainWindow) -> None:
    # The GUI thread only copies the text, and the writer thread encodes, writes and fsyncs.
    text = ("The Supplier shall deliver the Goods to the Customer's premises. " * 16 + "\n") * 1000
    assert len(text) > 1_000_000
    window.editor.setPlainText(text)
    window.editor.document().setModified(True)
    started = time.perf_counter()
    window.autosave.journal_now()
    gui_seconds = time.perf_counter() - started
    assert window.autosave.writer.flush(timeout=30)
    assert read_journal(window.autosave.path).text == text
    print(f"GUI thread time for a {len(text):,}-character journal: {gui_seconds * 1000:.0f} ms")
    assert gui_seconds < 0.5


# --- the recovery prompt ----------------------------------------------------------------------


def leave_journals(document_file: Path) -> list[Journal]:
    """Write the journals of two documents of an instance that ended without closing them."""
    saved = Journal(
        journal_id="saved-one",
        text=DOCUMENT + "Unsaved addition.",
        file_path=document_file,
        last_saved="2026-12-04T16:30:00+00:00",
        journaled_at="2026-12-05T01:10:00.000+00:00",
        instance_id="ended-instance",
    )
    untitled = Journal(
        journal_id="untitled-one",
        text="A new draft that was never saved.",
        file_path=None,
        journaled_at="2026-12-05T01:12:00.000+00:00",
        instance_id="ended-instance",
    )
    write_journal(saved)
    write_journal(untitled)
    return [saved, untitled]


def test_dialog_lists_documents(qtbot: QtBot, profile: Path, document_file: Path) -> None:
    leave_journals(document_file)
    scan = find_recoverable()
    dialog = RecoveryDialog(scan.journals)
    qtbot.addWidget(dialog)
    rows = [dialog.tree.topLevelItem(index) for index in range(dialog.tree.topLevelItemCount())]
    assert [row.text(0) for row in rows] == [FILE_NAME, "Untitled"]  # type: ignore[union-attr]
    assert rows[0].text(1) == str(document_file.parent)  # type: ignore[union-attr]
    assert "2026" in rows[0].text(2)  # type: ignore[union-attr]
    assert rows[1].text(2) == "never saved"  # type: ignore[union-attr]
    assert "2026" in rows[1].text(3)  # type: ignore[union-attr]
    dialog.set_checked(0, False)
    dialog.set_checked(1, False)
    assert not dialog.recover_button.isEnabled()


def test_not_now_keeps_journals(
    qtbot: QtBot, window: MainWindow, profile: Path, document_file: Path
) -> None:
    leave_journals(document_file)
    scan = find_recoverable()
    dialog = RecoveryDialog(scan.journals, window)
    click_later(dialog, RecoveryChoice.NOT_NOW)
    assert offer_recovery(scan.journals, window, lambda: make_window(qtbot), dialog) == []
    assert dialog.choice is RecoveryChoice.NOT_NOW
    assert len(find_recoverable().journals) == 2  # offered again at the next start
    assert window.is_pristine()


def test_discard_asks_then_deletes(
    qtbot: QtBot,
    window: MainWindow,
    profile: Path,
    document_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leave_journals(document_file)
    scan = find_recoverable()
    answers = [False, True]
    questions: list[int] = []

    def confirm(_dialog: RecoveryDialog, count: int) -> bool:
        questions.append(count)
        return answers.pop(0)

    monkeypatch.setattr(RecoveryDialog, "confirm_discard", confirm)
    dialog = RecoveryDialog(scan.journals, window)
    dialog.set_checked(1, False)
    QTimer.singleShot(0, dialog.discard_button.click)  # Cancel: the dialog stays open
    QTimer.singleShot(50, dialog.discard_button.click)  # Discard
    offer_recovery(scan.journals, window, lambda: make_window(qtbot), dialog)
    assert questions == [1, 1]
    assert dialog.choice is RecoveryChoice.DISCARD
    left = find_recoverable().journals
    assert [journal.display_name for journal in left] == ["Untitled"]  # unchecked one kept


def test_recover_two_documents(
    qtbot: QtBot, window: MainWindow, profile: Path, document_file: Path
) -> None:
    leave_journals(document_file)
    scan = find_recoverable()
    opened: list[MainWindow] = []

    def open_window() -> MainWindow:
        created = make_window(qtbot)
        opened.append(created)
        return created

    dialog = RecoveryDialog(scan.journals, window)
    click_later(dialog, RecoveryChoice.RECOVER)
    recovered = offer_recovery(scan.journals, window, open_window, dialog)
    try:
        assert recovered == [window, opened[0]]
        assert window.file_path == document_file
        assert window.editor.toPlainText() == DOCUMENT + "Unsaved addition."
        assert window.editor.document().isModified()
        assert FILE_NAME in window.windowTitle()
        assert opened[0].file_path is None
        assert opened[0].editor.toPlainText() == "A new draft that was never saved."
        assert opened[0].editor.document().isModified()

        # The recovered journal stays until the document is saved, to its original file.
        window.autosave.writer.flush(timeout=5)
        assert journal_path("saved-one").is_file()
        assert window.save()
        window.autosave.writer.flush(timeout=5)
        assert not journal_path("saved-one").exists()
        assert document_file.read_text(encoding="utf-8") == DOCUMENT + "Unsaved addition."
        assert journal_path("untitled-one").is_file()
    finally:
        for created in opened:
            created.autosave.close()
            created.controller.shutdown()


def test_generated_marks_recovered(qtbot: QtBot, profile: Path, tiny_model_dir: Path) -> None:
    first = make_window(qtbot, max_new_tokens=12, seed=5)
    first.load_model(tiny_model_dir)
    qtbot.waitUntil(lambda: first.controller.model is not None, timeout=60_000)
    first.editor.setPlainText(DOCUMENT)
    cursor = first.editor.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    first.editor.setTextCursor(cursor)
    with qtbot.waitSignal(first.controller.generation_finished, timeout=60_000):
        first.generate()
    [passage] = first.review.marks.passages()
    generated = document_text(first.editor.document())[len(DOCUMENT) :]

    # The journal written right after the completion has its record with the result.
    def result_journaled() -> bool:
        first.autosave.writer.flush(timeout=5)
        if not first.autosave.path.is_file():
            return False
        journaled = read_journal(first.autosave.path).review_file()
        return journaled is not None and journaled.passages[0].record.stop_reason == "length"

    qtbot.waitUntil(result_journaled, timeout=10_000)
    journal = read_journal(first.autosave.path)
    review_file = journal.review_file()
    assert review_file is not None
    assert review_file.passages[0].record.seed == passage.record.seed
    assert review_file.passages[0].text == generated
    first.controller.shutdown()  # the first window stays open, so its journal stays

    second = make_window(qtbot)
    try:
        scan = find_recoverable(exclude_instance=None)
        assert [item.journal_id for item in scan.journals] == [journal.journal_id]
        second.open_recovered(scan.journals[0])
        assert document_text(second.editor.document()) == DOCUMENT + generated
        [recovered] = second.review.marks.passages()
        assert (recovered.start, recovered.end) == (passage.start, passage.end)
        assert recovered.record.id == passage.record.id
        assert not recovered.record.reviewed
        assert second.autosave.journal_id == journal.journal_id
    finally:
        second.autosave.close()
        second.controller.shutdown()


# --- a process killed while a completion streams ----------------------------------------------


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_while_streaming_recovers(
    qtbot: QtBot, tmp_path: Path, tiny_model_dir: Path, document_file: Path, profile: Path
) -> None:
    config = profile / "config"
    config.mkdir(parents=True)
    (config / "settings.json").write_text(
        json.dumps(
            {
                "sampling": {"max_new_tokens": 1000, "seed": 7, "stop_at": "none"},
                "limitations_shown": True,
            }
        ),
        encoding="utf-8",
    )
    environment = {
        **os.environ,
        HOME_VARIABLE: str(profile),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(REPOSITORY),
    }
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kl3m_desk",
            "--model",
            str(tiny_model_dir),
            "--generate",
            str(document_file),
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Follow the journal while the completion streams, until it has grown twice.
    snapshots: list[Journal] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and app.poll() is None:
            for path in journal_files(profile):
                try:
                    current = read_journal(path)
                except journal_module.JournalError:
                    continue  # cannot happen with atomic writes; the test would fail below
                if not snapshots or current.text != snapshots[-1].text:
                    snapshots.append(current)
            streamed = [item for item in snapshots if len(item.text) > len(DOCUMENT)]
            if len(streamed) >= 2:
                break
            time.sleep(0.05)
        assert app.poll() is None, app.stderr.read().decode() if app.stderr else ""
        assert len([item for item in snapshots if len(item.text) > len(DOCUMENT)]) >= 2
        time.sleep(1.0)  # the kill lands between two journal writes
        killed_at = time.time()
        app.send_signal(signal.SIGKILL)
    finally:
        if app.poll() is None:
            app.kill()
        app.wait(timeout=30)
    assert app.returncode == -signal.SIGKILL

    [path] = journal_files(profile)
    final = read_journal(path)
    assert final.text.startswith(DOCUMENT)
    streamed_text = final.text[len(DOCUMENT) :]
    assert streamed_text
    for earlier in snapshots:
        assert final.text.startswith(earlier.text)
    # At most the text of the last JOURNAL_DELAY_MS, plus time to take and write the journal.
    assert killed_at - parse_time(final.journaled_at) < JOURNAL_DELAY_MS / 1000 + 2.0
    assert final.file_path == document_file
    assert final.last_saved is not None
    assert document_file.read_text(encoding="utf-8") == DOCUMENT  # never saved by the app
    review_file = final.review_file()
    assert review_file is not None
    [passage] = review_file.passages
    assert passage.text == streamed_text
    assert passage.record.stop_reason == "unknown"  # the completion was still streaming

    # The next start offers the document and recovers its text and review mark.
    scan = find_recoverable()
    assert [journal.display_name for journal in scan.journals] == [FILE_NAME]
    assert list(path.parent.glob("*.lock")) == []  # the killed instance's lock was stale
    window = make_window(qtbot)
    try:
        dialog = RecoveryDialog(scan.journals, window)
        assert dialog.tree.topLevelItem(0).text(0) == FILE_NAME  # type: ignore[union-attr]
        click_later(dialog, RecoveryChoice.RECOVER)
        assert offer_recovery(scan.journals, window, lambda: make_window(qtbot), dialog) == [window]
        assert document_text(window.editor.document()) == final.text
        assert window.file_path == document_file
        assert window.editor.document().isModified()
        assert len(window.review.marks.unreviewed()) == 1
        [recovered] = window.review.marks.review_file().passages
        assert recovered.text == streamed_text
        assert recovered.record.id == passage.record.id
        assert window.save_to(document_file)
        assert document_file.read_text(encoding="utf-8") == final.text
        assert sidecar_path(document_file).is_file()
        window.autosave.writer.flush(timeout=5)
        assert journal_files(profile) == []
    finally:
        window.autosave.close()
        window.controller.shutdown()


# --- safe saving ------------------------------------------------------------------------------


def test_failed_rename_keeps_old_file(monkeypatch: pytest.MonkeyPatch, document_file: Path) -> None:
    def crash(*_arguments: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(DocumentError) as raised:
        save_document(document_file, TextDocument(text="New text that never lands.", newline="\n"))
    assert str(document_file) in str(raised.value)
    assert document_file.read_text(encoding="utf-8") == DOCUMENT
    assert sorted(item.name for item in document_file.parent.iterdir()) == [FILE_NAME]


KILLED_BEFORE_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from kl3m_desk.documents import TextDocument, save_document
    os.replace = lambda *arguments: os.kill(os.getpid(), signal.SIGKILL)
    save_document(Path(sys.argv[1]), TextDocument(text="New text " * 100_000, newline="\\n"))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_before_rename_keeps_old_file(document_file: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_RENAME, str(document_file)],
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == -signal.SIGKILL
    assert document_file.read_text(encoding="utf-8") == DOCUMENT
    # The temporary file was complete and fsynced, but it never took the document's name.
    [temporary] = [item for item in document_file.parent.iterdir() if item != document_file]
    assert temporary.name.startswith(f".{FILE_NAME}.")
    assert temporary.read_text(encoding="utf-8") == "New text " * 100_000


def test_read_only_folder_reported(qtbot: QtBot, window: MainWindow, document_file: Path) -> None:
    window.open_document(document_file, ask=False)
    type_text(window, "Change that cannot be saved.")
    with read_only_folder(document_file.parent):
        assert not window.save()
        message = window.message_bar.label.text()
        assert str(document_file) in message
        assert "read-only" in message
        assert "Save As" in message
        assert window.editor.document().isModified()
        assert window.windowTitle().startswith(FILE_NAME)
        journal = wait_for_journal(qtbot, window, "cannot be saved")
        assert journal.file_path == document_file
        assert document_file.read_text(encoding="utf-8") == DOCUMENT


def test_full_disk_reported(
    qtbot: QtBot, window: MainWindow, document_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.open_document(document_file, ask=False)
    type_text(window, "Change for a full disk.")
    wait_for_journal(qtbot, window, "full disk")

    def full_disk(_descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    import kl3m_desk.settings

    with monkeypatch.context() as patch:
        patch.setattr(kl3m_desk.settings.os, "fsync", full_disk)
        assert not window.save()
    message = window.message_bar.label.text()
    assert str(document_file) in message
    assert "full" in message
    assert window.editor.document().isModified()
    assert document_file.read_text(encoding="utf-8") == DOCUMENT
    assert sorted(item.name for item in document_file.parent.iterdir()) == [FILE_NAME]
    window.autosave.writer.flush(timeout=5)
    assert journal_path(window.autosave.journal_id).is_file()
