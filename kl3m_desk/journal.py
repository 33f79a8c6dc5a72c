"""Recovery journals: a copy of each open document with unsaved changes, for after a crash.

While a document has unsaved changes, the window writes a journal to `recovery_dir()` a few
seconds after each change. The journal contains the text, the file path (None for an untitled
document), the time the file was last saved and the template values entered for it. It also
contains the generation records and pinned passages, as the `.kl3m.json` file beside a saved
document has them (see kl3m_desk.review). Each window
has one journal file, named by a random id. It is deleted when the document is saved, or closed or
replaced without saving because the user chose so. A journal that is left behind belongs to a
document whose window ended without either, which is what happens when the process crashes or is
killed.

Every running instance holds an operating-system lock on a file named after its instance id
(`InstanceLock`). The lock ends with the process however it ends, so at start-up a journal whose
instance still holds its lock belongs to a live window of another instance and is not offered for
recovery.

Writes are atomic (a temporary file, fsync, then a rename), so a process killed during a write
leaves the previous journal. `JournalWriter` writes on a thread of its own, so a long document
does not stall the window while it is serialized and flushed to disk.

Nothing here imports Qt.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kl3m_desk import paths
from kl3m_desk.review import ReviewFile, ReviewFileError, parse_review_file
from kl3m_desk.settings import backup_path, write_text_atomically

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "kl3m-desk recovery journal"
JOURNAL_VERSION = 1
JOURNAL_SUFFIX = ".journal.json"
LOCK_SUFFIX = ".lock"

# Id of this process's instance: its journals name it, and its InstanceLock is named after it.
INSTANCE_ID = uuid.uuid4().hex

# Seconds after which a temporary file left by a killed write is deleted at start-up. A live
# write keeps its temporary file for milliseconds.
STALE_TEMPORARY_SECONDS = 3600


class JournalError(Exception):
    """A journal file is unreadable or invalid. The message names the file and the problem."""


def recovery_dir() -> Path:
    """Return the folder of the recovery journals and instance locks."""
    return paths.data_dir() / "recovery"


def precise_timestamp() -> str:
    """Return the current time as ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_journal_id() -> str:
    """Return a new random journal id, used as the journal's file name."""
    return uuid.uuid4().hex


def journal_path(journal_id: str, directory: Path | None = None) -> Path:
    """Return the file of the journal `journal_id`."""
    return (directory or recovery_dir()) / f"{journal_id}{JOURNAL_SUFFIX}"


@dataclass
class Journal:
    """The state of one document with unsaved changes, as written to its journal file."""

    journal_id: str
    text: str  # with "\n" line breaks, as the editor stores it
    file_path: Path | None  # None for a document never saved
    newline: str = "\n"  # the line ending the next save writes
    last_saved: str | None = None  # ISO 8601 UTC modification time of the file, or None
    journaled_at: str = field(default_factory=precise_timestamp)  # when the text was taken
    # The document's records file (kl3m_desk.review.ReviewFile.to_json), or None without records
    # and pinned passages.
    records: dict[str, Any] | None = None
    field_values: dict[str, str] = field(default_factory=dict)  # template values entered
    instance_id: str = INSTANCE_ID
    pid: int = field(default_factory=os.getpid)
    path: Path | None = None  # the file it was read from; None until written or read

    @property
    def display_name(self) -> str:
        """The document's file name, or "Untitled"."""
        return self.file_path.name if self.file_path is not None else "Untitled"

    def review_file(self) -> ReviewFile | None:
        """Return the journaled generation records, or None. Raises JournalError when invalid."""
        if self.records is None:
            return None
        try:
            return parse_review_file(self.records, f"{self.path}, records")
        except ReviewFileError as error:
            raise JournalError(str(error)) from error

    def to_json(self) -> dict[str, Any]:
        """Return the journal's JSON object."""
        return {
            "format": JOURNAL_FORMAT,
            "version": JOURNAL_VERSION,
            "id": self.journal_id,
            "instance": self.instance_id,
            "pid": self.pid,
            "journaled_at": self.journaled_at,
            "file": str(self.file_path) if self.file_path is not None else None,
            "newline": self.newline,
            "last_saved": self.last_saved,
            "field_values": self.field_values,
            "text": self.text,
            "records": self.records,
        }

    @classmethod
    def from_json(cls, data: object, path: Path) -> Journal:
        """Read a journal written by `to_json`, raising JournalError that names `path`."""
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{path} is not a kl3m-desk recovery journal.")
        if data.get("version") != JOURNAL_VERSION:
            raise JournalError(
                f"{path} has journal version {data.get('version')!r}, but this kl3m-desk reads "
                f"version {JOURNAL_VERSION}."
            )
        strings = ("id", "instance", "journaled_at", "text", "newline")
        for key in strings:
            if not isinstance(data.get(key), str):
                raise JournalError(f"{path}: {key} is {data.get(key)!r}, not a string.")

        file_name = data.get("file")
        last_saved = data.get("last_saved")
        records = data.get("records")
        field_values = data.get("field_values", {})
        if file_name is not None and not isinstance(file_name, str):
            raise JournalError(f"{path}: file is {file_name!r}, not a path or null.")
        if last_saved is not None and not isinstance(last_saved, str):
            raise JournalError(f"{path}: last_saved is {last_saved!r}, not a time or null.")
        if records is not None and not isinstance(records, dict):
            raise JournalError(f"{path}: records is not a JSON object or null.")
        if not isinstance(field_values, dict) or not all(
            isinstance(value, str) for value in field_values.values()
        ):
            raise JournalError(f"{path}: field_values is not an object of strings.")

        pid = data.get("pid")
        return cls(
            journal_id=data["id"],
            text=data["text"],
            file_path=Path(file_name) if file_name else None,
            newline="\r\n" if data["newline"] == "\r\n" else "\n",
            last_saved=last_saved,
            journaled_at=data["journaled_at"],
            records=records,
            field_values=dict(field_values),
            instance_id=data["instance"],
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            path=path,
        )


def file_saved_at(path: Path | None) -> str | None:
    """Return the modification time of `path` as ISO 8601 UTC, or None when it does not exist."""
    if path is None:
        return None
    try:
        modified = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(modified, UTC).isoformat(timespec="seconds")


def write_journal(journal: Journal, directory: Path | None = None) -> Path:
    """Write `journal` atomically to its file and return the file; raises OSError on failure."""
    path = journal_path(journal.journal_id, directory)
    text = json.dumps(journal.to_json(), ensure_ascii=False)
    write_text_atomically(path, text)
    journal.path = path
    return path


def read_journal(path: Path) -> Journal:
    """Read the journal file `path`, raising JournalError when it is unreadable or invalid."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise JournalError(
            f"The recovery journal {path} could not be read: {error.strerror or error}."
        ) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JournalError(f"The recovery journal {path} is not valid JSON ({error}).") from error
    return Journal.from_json(data, path)


def delete_journal(path: Path) -> None:
    """Delete a journal file; a journal already gone is not an error. Raises other OSErrors."""
    path.unlink(missing_ok=True)
    log.info("Deleted the recovery journal %s", path)


@dataclass
class RecoveryScan:
    """Result of `find_recoverable`: the journals to offer, and what was left out."""

    journals: list[Journal]  # of documents whose window ended without saving, oldest first
    live: int = 0  # journals of windows of other running instances, not offered
    problems: list[str] = field(default_factory=list)  # invalid journals, renamed aside


def find_recoverable(
    directory: Path | None = None, exclude_instance: str | None = INSTANCE_ID
) -> RecoveryScan:
    """Return the journals of documents whose instance ended, except `exclude_instance`'s.

    An invalid journal is renamed aside with an `.invalid-<time>` suffix and reported in
    `problems`. Lock files of ended instances and old temporary files are deleted.
    """
    # NOTE: journals kept with Not Now belong to no live instance, so a second instance started
    # while the first still shows them offers them too, and both could recover the same document.
    folder = directory or recovery_dir()
    scan = RecoveryScan(journals=[])
    if not folder.is_dir():
        return scan
    live_instances: dict[str, bool] = {}

    def is_live(instance_id: str) -> bool:
        if instance_id not in live_instances:
            live_instances[instance_id] = InstanceLock.is_held(folder / (instance_id + LOCK_SUFFIX))
        return live_instances[instance_id]

    for path in sorted(folder.glob(f"*{JOURNAL_SUFFIX}")):
        try:
            journal = read_journal(path)
        except JournalError as error:
            log.warning("%s", error)
            scan.problems.append(f"{error} It was renamed to {_move_aside(path)}.")
            continue
        if journal.instance_id == exclude_instance:
            continue
        if is_live(journal.instance_id):
            scan.live += 1
            continue
        scan.journals.append(journal)
    _remove_stale_files(folder, is_live)
    scan.journals.sort(key=lambda journal: journal.journaled_at)
    log.info(
        "Recovery folder %s: %d journals to offer, %d of running instances",
        folder,
        len(scan.journals),
        scan.live,
    )
    return scan


def _move_aside(path: Path) -> str:
    backup = backup_path(path)
    try:
        path.replace(backup)
    except OSError as error:
        log.warning("Could not rename the invalid recovery journal %s: %s", path, error)
        return path.name
    return backup.name


def _remove_stale_files(folder: Path, is_live: Callable[[str], bool]) -> None:
    now = time.time()
    for lock in folder.glob(f"*{LOCK_SUFFIX}"):
        instance_id = lock.name[: -len(LOCK_SUFFIX)]
        if instance_id != INSTANCE_ID and not is_live(instance_id):
            lock.unlink(missing_ok=True)
    for temporary in folder.glob(".*.tmp"):
        try:
            if now - temporary.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                temporary.unlink()
        except OSError as error:
            log.warning("Could not remove the temporary file %s: %s", temporary, error)


def _try_lock(stream: IO[bytes]) -> bool:
    """Take an exclusive lock on `stream` without waiting; return False when another holds it."""
    try:
        if sys.platform == "win32":
            # NOTE: this branch has not run in the tests, which run on Linux.
            import msvcrt

            stream.seek(0)
            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class InstanceLock:
    """A lock file that marks the journals of `instance_id` as belonging to a running process.

    The lock is `flock` on Unix and `msvcrt.locking` on Windows. The operating system releases
    it when the process ends, also when it is killed, so a lock file that nobody holds is stale.
    """

    def __init__(self, directory: Path | None = None, instance_id: str = INSTANCE_ID) -> None:
        self.path = (directory or recovery_dir()) / (instance_id + LOCK_SUFFIX)
        self._stream: IO[bytes] | None = None

    def acquire(self) -> None:
        """Create and lock the lock file, raising OSError when that fails."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if sys.platform == "win32":
            # Windows cannot rename a file that is open, so it is locked under its own name.
            stream = open(self.path, "w+b")  # noqa: SIM115 - held open while the lock lasts
        else:
            # Lock a temporary name first, so no scan ever sees this lock file unlocked.
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            stream = open(temporary, "w+b")  # noqa: SIM115 - held open while the lock lasts
        if not _try_lock(stream):
            stream.close()
            raise OSError(f"The lock file {self.path} is held by another process.")
        stream.write(f"{os.getpid()}\n".encode())
        stream.flush()
        if sys.platform != "win32":
            os.replace(stream.name, self.path)
        self._stream = stream
        log.info("Holding the instance lock %s", self.path)

    def release(self) -> None:
        """Delete the lock file and release the lock."""
        if self._stream is None:
            return
        self.path.unlink(missing_ok=True)
        self._stream.close()
        self._stream = None

    @staticmethod
    def is_held(path: Path) -> bool:
        """Return True when a process holds the lock on `path`, this process included."""
        try:
            stream = open(path, "r+b")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False
        except OSError:
            # Windows refuses to open a file another process holds locked for writing.
            return True
        with stream:
            if not _try_lock(stream):
                return True
        return False


@dataclass
class _Operation:
    path: Path
    journal: Journal | None  # None deletes the file


class JournalWriter:
    """Writes and deletes journal files on a thread of its own, in the order requested.

    A request replaces any pending request for the same file, so a journal written often is only
    written in its latest state. `on_error` is called on the writer thread with the file and the
    OSError of a failed request.
    """

    def __init__(
        self,
        directory: Path | None = None,
        on_error: Callable[[Path, OSError], None] | None = None,
        on_written: Callable[[Journal], None] | None = None,
    ) -> None:
        self.directory = directory or recovery_dir()
        self._on_error = on_error
        self._on_written = on_written
        self._pending: list[_Operation] = []
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="journal writer", daemon=True)
        self._thread.start()

    def write(self, journal: Journal) -> None:
        """Write `journal` to its file soon."""
        self._submit(_Operation(journal_path(journal.journal_id, self.directory), journal))

    def delete(self, journal_id: str) -> None:
        """Delete the file of journal `journal_id` soon, after any write to it requested earlier."""
        self._submit(_Operation(journal_path(journal_id, self.directory), None))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every request is done; returns False when `timeout` seconds passed first."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._pending and not self._busy, timeout=timeout
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the pending requests and end the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)

    def _submit(self, operation: _Operation) -> None:
        with self._condition:
            if self._closed:
                raise RuntimeError("The journal writer is closed.")
            self._pending = [item for item in self._pending if item.path != operation.path]
            self._pending.append(operation)
            self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed with nothing left to do
                operation = self._pending.pop(0)
                self._busy = True
            try:
                self._perform(operation)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _perform(self, operation: _Operation) -> None:
        try:
            if operation.journal is None:
                if operation.path.exists():
                    delete_journal(operation.path)
                return
            started = time.perf_counter()
            write_journal(operation.journal, self.directory)
            log.debug(
                "Journaled %d characters of %s to %s in %.0f ms",
                len(operation.journal.text),
                operation.journal.display_name,
                operation.path,
                (time.perf_counter() - started) * 1000,
            )
        except OSError as error:
            log.warning("Could not update the recovery journal %s: %s", operation.path, error)
            if self._on_error is not None:
                self._on_error(operation.path, error)
            return
        if self._on_written is not None:
            self._on_written(operation.journal)
