"""Downloading a model from the Hugging Face Hub: the one place where kl3m-desk goes online.

The package sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub (see
kl3m_desk/__init__.py). huggingface_hub 2.4 reads that variable once, at import, into
`huggingface_hub.constants.HF_HUB_OFFLINE`, and every request through its HTTP session checks that
constant at send time (`hf_request_event_hook` in huggingface_hub/utils/_http.py). Switching the
constant off in the app's own process would make the whole process online, including the inference
thread and anything else running while a download takes minutes.

So every network call of this module runs in a child process started with the "spawn" method. Only
that child switches the constant off. It also forces telemetry off, because with telemetry on,
huggingface_hub 2.4 builds its User-Agent by fetching a list of agent harnesses from the default Hub
endpoint, whatever endpoint the call uses. The app's process never changes either setting, so it
stays offline during and after a download. Cancelling terminates the child at once. A watchdog in
the app's process ends it when it reports nothing for the timeout plus five seconds, for example
when name resolution hangs, which httpx timeouts do not cover. The frozen app supports the child
because packaging/launcher.py calls `multiprocessing.freeze_support()`.

What is used from huggingface_hub, and why:

- `HfApi(endpoint=...).model_info(files_metadata=True)` resolves the revision to a commit and lists
  each file's size with its checksum: the sha256 from the LFS metadata for LFS files, and the git
  blob id (the sha1 of "blob <size>\\0" followed by the content) for files stored in git itself,
  such as config.json and often tokenizer.json.
- Files are fetched with the library's HTTP session (`get_session`, `build_hf_headers`,
  `hf_hub_url`, `hf_raise_for_status`), but the streaming loop is this module's own.
  `hf_hub_download` in huggingface_hub 2.4 (`_download_to_tmp_and_move` in file_download.py)
  writes each download to a temporary file with a per-process random name and deletes it on
  failure, so a download never resumes after a cancellation or a restart. Its `http_get` reads in
  10 MiB pieces, which makes progress coarse, and it retries a stalled read five times, which
  multiplies the timeout.

Files go to a staging folder beside the target (`.<name>.download`), each first as `<file>.part`,
which the next call continues with an HTTP Range request. When every file has arrived, the app's
process checks each file's size and checksum, writes `kl3m-desk-download.json`, then renames the
staging folder to the target. A partial or corrupt download therefore never appears under the
target name, and a folder at the target name was either checked in full or not made here at all.
The record lists the commit and each file's size and sha256.

NOTE: this has run only against the mock Hub of tests/mock_hub.py. The real Hub redirects LFS
files to a storage host, which is expected to honour Range requests and to keep the LFS sha256 in
the file listing for Xet-backed files, as the mock does.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_desk import APP_NAME, __version__, paths

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

DEFAULT_REPO = "alea-institute/kl3m-002-520m"
RECORD_FILE = "kl3m-desk-download.json"
PART_SUFFIX = ".part"

CONFIG_FILES = ("config.json", "generation_config.json")
# A superset of kl3m_desk.model.TOKENIZER_FILES, plus the files that go with them. Kept here
# because importing kl3m_desk.model would import torch in the download process.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
LOADABLE_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_PATTERN = "pytorch_model*.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"

ProgressCallback = Callable[[int, int, float], None]

_HASH_CHUNK = 4 * 1024 * 1024
_PROGRESS_INTERVAL = 0.1  # seconds between progress messages of the download process
_POLL_INTERVAL = 0.1  # seconds between checks of the cancel event
_SPEED_WINDOW = 5.0  # seconds of transfer that the reported speed averages over
# The download process enforces `timeout` on every connect and read itself. The watchdog is a
# backstop for calls that timeouts do not bound, so it allows a few seconds more.
_WATCHDOG_GRACE = 5.0
_START_LIMIT = 60.0  # seconds for the download process to start and import huggingface_hub
# Dropped connections in a row, each without new data, before the download of a file fails.
_MAX_ATTEMPTS_WITHOUT_DATA = 3


class DownloadError(Exception):
    """A model download failed; the message states what failed and what to do next."""


class DownloadCancelled(DownloadError):
    """The user cancelled a download; the data already downloaded is kept for the next call."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a model repository: its name, size in bytes and published checksum.

    `sha256` is the LFS sha256 of the content. Files stored in git itself have no LFS metadata, so
    they are checked against `blob_id`, the git blob sha1 of the content.
    """

    name: str
    size: int
    sha256: str | None
    blob_id: str | None = None


@dataclass(frozen=True)
class DownloadPlan:
    """The files to download from `repo_id` at the commit `revision`, and their total size."""

    repo_id: str
    revision: str
    files: tuple[RemoteFile, ...]
    total_bytes: int


def plan_download(
    repo_id: str = DEFAULT_REPO,
    revision: str = "main",
    endpoint: str | None = None,
    timeout: float = 20.0,
) -> DownloadPlan:
    """Ask the Hub which files of `repo_id` the app needs at `revision`, with sizes and checksums.

    `endpoint` defaults to huggingface_hub's endpoint (https://huggingface.co unless HF_ENDPOINT
    is set). The files are config.json, generation_config.json, the tokenizer files, the
    safetensors weights with their index, or the pytorch_model*.bin weights with their index when
    the repository has no safetensors. Code files (*.py) and files in subfolders are never
    included. Raises DownloadError when the Hub cannot be reached, the model or revision is not
    found, or the repository lacks a configuration, weights or a tokenizer.

    A repository with only pytorch_model*.bin weights downloads as it is. kl3m_desk.model loads
    safetensors only, so the window imports such a download (kl3m_desk.model_import) before loading.
    """
    arguments = {
        "repo_id": repo_id,
        "revision": revision,
        "endpoint": endpoint,
        "timeout": timeout,
    }
    info = _run_in_download_process(
        "plan",
        arguments,
        timeout=timeout,
        no_answer_message=(
            f"No internet connection: the Hub did not answer within {timeout:g} s. Check that "
            "this computer is online and try again."
        ),
    )
    files = select_files(
        RemoteFile(name=name, size=size, sha256=sha256, blob_id=blob_id)
        for name, size, sha256, blob_id in info["files"]
    )
    _check_plan_files(repo_id, info["revision"], files)
    plan = DownloadPlan(
        repo_id=repo_id,
        revision=info["revision"],
        files=files,
        total_bytes=sum(remote.size for remote in files),
    )
    log.info(
        "Planned download of %s at %s: %d files, %s",
        repo_id,
        plan.revision,
        len(files),
        model_size_text(plan),
    )
    return plan


def select_files(candidates: Iterable[RemoteFile]) -> tuple[RemoteFile, ...]:
    """Return the files that the app loads, configuration and tokenizer first, weights last."""
    top_level = {remote.name: remote for remote in candidates if _is_plain_name(remote.name)}
    selected = [top_level[name] for name in (*CONFIG_FILES, *TOKENIZER_FILES) if name in top_level]

    safetensors = sorted(name for name in top_level if name.endswith(".safetensors"))
    if safetensors:
        weight_names = safetensors + ([SAFETENSORS_INDEX] if SAFETENSORS_INDEX in top_level else [])
    else:
        pickles = sorted(name for name in top_level if fnmatch.fnmatchcase(name, PICKLE_PATTERN))
        weight_names = pickles + ([PICKLE_INDEX] if pickles and PICKLE_INDEX in top_level else [])
    selected.extend(top_level[name] for name in weight_names)
    return tuple(selected)


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _check_plan_files(repo_id: str, revision: str, files: tuple[RemoteFile, ...]) -> None:
    names = {remote.name for remote in files}
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(name.endswith((".safetensors", ".bin")) for name in names):
        missing.append("weights (*.safetensors)")
    if not names.intersection(LOADABLE_TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json)")
    if missing:
        raise DownloadError(
            f"The model {repo_id} at revision {revision[:12]} has no {', '.join(missing)}, so "
            "kl3m-desk cannot use it. Choose another model."
        )
    for remote in files:
        if remote.size < 0 or (remote.sha256 is None and remote.blob_id is None):
            raise DownloadError(
                f"The Hub sent no size or checksum for {remote.name} of {repo_id}, so the "
                "download could not be checked. Try again later."
            )


def model_size_text(plan: DownloadPlan) -> str:
    """Return the plan's total size for display, in decimal units, for example "2.1 GB"."""
    return format_bytes(plan.total_bytes)


def format_bytes(count: int) -> str:
    """Return a byte count in decimal units with one decimal, for example "16.8 MB"."""
    if count < 1000:
        return f"{count} bytes"
    value = float(count)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 999.95 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def default_target_dir(repo_id: str = DEFAULT_REPO) -> Path:
    """Return the folder a model is downloaded to by default: <data dir>/models/<repo name>."""
    return paths.data_dir() / "models" / repo_id.rsplit("/", 1)[-1]


def download_model(
    plan: DownloadPlan,
    target_dir: Path | None = None,
    endpoint: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 20.0,
) -> Path:
    """Download the files of `plan` into `target_dir`, check them and return the folder.

    `target_dir` defaults to `default_target_dir(plan.repo_id)`. The files arrive in the staging
    folder `.<target name>.download` beside it, which becomes the target only after every file
    passed its size and checksum check.

    `progress(bytes_done, bytes_total, bytes_per_second)` is called on the calling thread about
    ten times a second while data arrives. `bytes_done` includes data kept from earlier attempts,
    and the speed averages the last few seconds. Setting `cancel` stops the download within about
    a second and raises DownloadCancelled. The data already downloaded stays in the staging
    folder, so a later call with the same plan and target continues where this one stopped, also
    after the app restarts.

    When the target already contains this download, the call returns at once without network
    access. A target that contains an earlier revision downloaded here is replaced once the new
    revision has passed its checks. Raises DownloadError when the computer seems offline, the
    server sends no data for `timeout` seconds, a file is incomplete or fails its checksum, the
    target contains other files, or a folder cannot be written.
    """
    target = (
        Path(target_dir).expanduser().absolute() if target_dir else default_target_dir(plan.repo_id)
    )
    staging = target.parent / f".{target.name}.download"
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"The download of {plan.repo_id} was cancelled before it started.")
    if _is_complete_download(target, plan):
        log.info("Model %s at %s is already in %s", plan.repo_id, plan.revision, target)
        if progress is not None:
            progress(plan.total_bytes, plan.total_bytes, 0.0)
        return target
    _check_target_is_replaceable(target)

    import filelock

    lock = filelock.FileLock(str(target.parent / f".{target.name}.download.lock"), timeout=0)
    _prepare_folder(target.parent, target)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(
            f"Another download into {target} is already running. Wait for it to finish."
        ) from None
    except OSError as error:
        raise _folder_error(target.parent, target, error) from error
    try:
        _prepare_staging(staging, target, plan)
        _check_free_space(staging, plan)
        started = time.monotonic()
        transferred = _fetch_into_staging(
            plan, staging, target, endpoint, progress, cancel, timeout
        )
        sha256_by_name = _verify_staged_files(plan, staging, cancel)
        _write_record(staging, plan, sha256_by_name)
        _move_into_place(staging, target)
    finally:
        # The lock file stays: deleting it could let a third process lock a new file while a
        # second one still holds the old one.
        lock.release()
    log.info(
        "Downloaded %s at %s to %s: %s transferred in %.1f s",
        plan.repo_id,
        plan.revision,
        target,
        format_bytes(transferred),
        time.monotonic() - started,
    )
    return target


def _is_complete_download(target: Path, plan: DownloadPlan) -> bool:
    record = _read_record(target)
    if record is None or record.get("repo_id") != plan.repo_id:
        return False
    if record.get("revision") != plan.revision:
        return False
    for remote in plan.files:
        path = target / remote.name
        if not path.is_file() or path.stat().st_size != remote.size:
            return False
    return True


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _check_target_is_replaceable(target: Path) -> None:
    """Reject a target that contains files this module did not download."""
    if not target.exists():
        return
    if not target.is_dir():
        raise DownloadError(
            f"{target} is a file, not a folder. Choose another folder for the model."
        )
    if _read_record(target) is not None:
        return
    if (target / RECORD_FILE).exists():
        raise DownloadError(
            f"The download record {target / RECORD_FILE} is damaged, so kl3m-desk cannot tell "
            f"which files in {target} it downloaded. Delete that folder or choose another one."
        )
    if any(target.iterdir()):
        raise DownloadError(
            f"The folder {target} already contains files that kl3m-desk did not download. "
            "Choose an empty or new folder for the model."
        )


def _folder_error(folder: Path, target: Path, error: OSError) -> DownloadError:
    reason = error.strerror or str(error)
    return DownloadError(
        f"Cannot write the model to {target}: writing in the folder {folder} failed ({reason}). "
        "Check that the folder is writable, or choose another folder."
    )


def _prepare_folder(folder: Path, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocked = error.filename or folder
        raise DownloadError(
            f"Cannot write the model to {target}: the folder {blocked} could not be created "
            f"({error.strerror or error}). Choose a folder you can write to."
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(
            f"Cannot write the model to {target}: the folder {folder} is read-only. "
            "Choose a folder you can write to."
        )


def _prepare_staging(staging: Path, target: Path, plan: DownloadPlan) -> None:
    """Create the staging folder, discarding data of another repository or revision."""
    record = _read_record(staging)
    if staging.exists() and (
        record is None
        or record.get("repo_id") != plan.repo_id
        or record.get("revision") != plan.revision
    ):
        log.info("Discarding the partial download in %s: it is not %s", staging, plan.revision)
        shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(exist_ok=True)
        (staging / RECORD_FILE).write_text(
            json.dumps({"repo_id": plan.repo_id, "revision": plan.revision, "complete": False})
            + "\n",
            encoding="utf-8",
        )
    except OSError as error:
        raise _folder_error(staging.parent, target, error) from error


def _staged_bytes(staging: Path, remote: RemoteFile) -> int:
    """Return how many bytes of `remote` are already in the staging folder."""
    for path in (staging / remote.name, staging / (remote.name + PART_SUFFIX)):
        if path.is_file():
            return min(path.stat().st_size, remote.size)
    return 0


def _check_free_space(staging: Path, plan: DownloadPlan) -> None:
    needed = plan.total_bytes - sum(_staged_bytes(staging, remote) for remote in plan.files)
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise DownloadError(
            f"Not enough free disk space in {staging.parent}: the model needs "
            f"{format_bytes(needed)} more, but only {format_bytes(free)} are free. Free some "
            "space or choose a folder on another disk."
        )


class _SpeedMeter:
    """Average transfer rate over the last `_SPEED_WINDOW` seconds."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, transferred: int) -> float:
        now = time.monotonic()
        self._samples.append((now, transferred))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _SPEED_WINDOW:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        elapsed = now - first_time
        return (transferred - first_bytes) / elapsed if elapsed > 0 else 0.0


def _fetch_into_staging(
    plan: DownloadPlan,
    staging: Path,
    target: Path,
    endpoint: str | None,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    timeout: float,
) -> int:
    """Run the download process until every file is in `staging`; return the bytes transferred."""
    meter = _SpeedMeter()
    transferred = 0

    def report(done: int, transferred_now: int) -> None:
        nonlocal transferred
        transferred = transferred_now
        speed = meter.add(transferred_now)
        if progress is not None:
            progress(done, plan.total_bytes, speed)

    arguments = {"plan": plan, "staging": str(staging), "endpoint": endpoint, "timeout": timeout}
    try:
        _run_in_download_process(
            "download",
            arguments,
            timeout=timeout,
            cancel=cancel,
            on_progress=report,
            no_answer_message=(
                f"The download of {plan.repo_id} timed out: the server sent no data for "
                f"{timeout:g} s. Check the internet connection and start the download again; it "
                "continues where it stopped."
            ),
        )
    except DownloadCancelled:
        kept_bytes = sum(_staged_bytes(staging, remote) for remote in plan.files)
        log.info(
            "Download of %s into %s cancelled with %d bytes kept", plan.repo_id, target, kept_bytes
        )
        raise DownloadCancelled(
            f"The download of {plan.repo_id} was cancelled. The {format_bytes(kept_bytes)} already "
            f"downloaded are kept in {staging}, and starting the download again continues from "
            "there."
        ) from None
    return transferred


def _verify_staged_files(
    plan: DownloadPlan, staging: Path, cancel: threading.Event | None
) -> dict[str, str]:
    """Check the size and checksum of every staged file; return the sha256 of each by name.

    Raises DownloadError naming every file that fails, after deleting those files.
    """
    failed = []
    sha256_by_name = {}
    for remote in plan.files:
        path = staging / remote.name
        size = path.stat().st_size if path.is_file() else -1
        if size != remote.size:
            failed.append(f"{remote.name} has {size} bytes instead of {remote.size}")
            path.unlink(missing_ok=True)
            continue
        sha256, blob_id = _file_digests(path, remote.size, cancel)
        expected, actual, kind = (
            (remote.sha256, sha256, "sha256")
            if remote.sha256 is not None
            else (remote.blob_id, blob_id, "git blob sha1")
        )
        if actual != expected:
            failed.append(f"{remote.name} has {kind} {actual}, expected {expected}")
            path.unlink()
        sha256_by_name[remote.name] = sha256
    if failed:
        raise DownloadError(
            f"The download of {plan.repo_id} is damaged and was not installed: the checksum "
            f"check failed because {'; '.join(failed)}. The damaged files were deleted; start the "
            "download again to fetch them anew."
        )
    return sha256_by_name


def _file_digests(path: Path, size: int, cancel: threading.Event | None) -> tuple[str, str]:
    """Return the sha256 and the git blob sha1 of a file, checking `cancel` between chunks."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(
                    f"The download was cancelled while checking {path.name}. The downloaded files "
                    f"are kept in {path.parent}, and starting the download again checks them."
                )
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def _write_record(staging: Path, plan: DownloadPlan, sha256_by_name: Mapping[str, str]) -> None:
    """Record the repository, commit and the checked size and sha256 of every file."""
    record = {
        "repo_id": plan.repo_id,
        "revision": plan.revision,
        "complete": True,
        "files": {
            remote.name: {"size": remote.size, "sha256": sha256_by_name[remote.name]}
            for remote in plan.files
        },
    }
    (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the checked staging folder to `target`, replacing an earlier download there."""
    for leftover in staging.glob("*" + PART_SUFFIX):
        leftover.unlink()
    previous = None
    try:
        if target.exists():
            previous = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(previous)
        staging.rename(target)
    except OSError as error:
        if previous is not None and not target.exists():
            previous.rename(target)
        raise _folder_error(target.parent, target, error) from error
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


# The download process: `_run_in_download_process` starts it from the app's process, and the
# functions after `_stop_process` run inside it.


def _run_in_download_process(
    task: str,
    arguments: Mapping[str, Any],
    *,
    timeout: float,
    no_answer_message: str,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Run `task` in a spawned child process and return its result.

    Raises DownloadError with the child's message, with `no_answer_message` when the child sends
    nothing for `timeout` plus a few seconds, and DownloadCancelled when `cancel` is set.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    # The target is looked up here, at call time, so that tests can wrap it.
    process = context.Process(
        target=_download_process_main,
        args=(sender, task, dict(arguments)),
        name=f"{APP_NAME}-{task}",
        daemon=True,
    )
    process.start()
    sender.close()
    finished = False
    started = False
    last_message = time.monotonic()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("The download was cancelled.")
            limit = timeout + _WATCHDOG_GRACE if started else max(_START_LIMIT, timeout)
            if time.monotonic() - last_message > limit:
                log.warning("The %s process sent nothing for %.0f s; stopping it", task, limit)
                raise DownloadError(no_answer_message)
            if not receiver.poll(_POLL_INTERVAL):
                continue
            try:
                message = receiver.recv()
            except EOFError:
                process.join(timeout=5)
                raise DownloadError(
                    f"The download process stopped unexpectedly (exit code {process.exitcode}). "
                    "Try again; if it keeps failing, report it with the log file."
                ) from None
            last_message = time.monotonic()
            kind = message[0]
            if kind == "started":
                started = True
            elif kind == "progress" and on_progress is not None:
                on_progress(message[1], message[2])
            elif kind == "result":
                finished = True
                return message[1]
            elif kind == "error":
                if len(message) > 2 and message[2]:
                    log.error("The %s process failed:\n%s", task, message[2])
                raise DownloadError(message[1])
    finally:
        receiver.close()
        _stop_process(process, wait=5.0 if finished else 0.0)


def _stop_process(process: multiprocessing.process.BaseProcess, wait: float) -> None:
    """Give the process `wait` seconds to exit by itself, then terminate it."""
    process.join(timeout=wait)
    if process.is_alive():
        process.terminate()
        process.join(timeout=2)
    if process.is_alive():
        process.kill()
        process.join()


class _ChildFailure(Exception):
    """A failure inside the download process whose message is ready for the user."""


def _download_process_main(sender: Connection, task: str, arguments: dict[str, Any]) -> None:
    """Entry point of the download process: go online, run `task` and send its result."""
    try:
        from huggingface_hub import constants as hub_constants

        # This process exists only to reach the Hub, so it alone turns off the offline mode that
        # the package switched on. Telemetry stays off so that no request goes anywhere but the
        # chosen endpoint (see the module docstring).
        hub_constants.HF_HUB_OFFLINE = False
        hub_constants.HF_HUB_DISABLE_TELEMETRY = True
        sender.send(("started",))
        if task == "plan":
            result: Any = _child_model_info(**arguments)
        elif task == "download":
            result = _child_download(sender, **arguments)
        else:
            raise ValueError(f"unknown task {task!r}")
        sender.send(("result", result))
    except (BrokenPipeError, EOFError):
        return  # The app's process has ended, so no process is waiting for the result.
    except _ChildFailure as failure:
        sender.send(("error", str(failure), ""))
    except Exception as error:  # the process boundary: report everything to the app's process
        sender.send(
            ("error", f"The download failed unexpectedly: {error!r}.", traceback.format_exc())
        )
    finally:
        sender.close()


def _host_of(endpoint: str | None) -> str:
    from urllib.parse import urlsplit

    from huggingface_hub import constants as hub_constants

    url = endpoint or hub_constants.ENDPOINT
    return urlsplit(url).netloc or url


def _describe_failure(
    error: Exception, *, endpoint: str | None, timeout: float, resource: str
) -> _ChildFailure:
    """Turn an exception of huggingface_hub or httpx2 into a message for the user."""
    import httpx2
    from huggingface_hub import errors

    host = _host_of(endpoint)
    if isinstance(error, httpx2.ConnectTimeout):
        return _ChildFailure(
            f"No internet connection: connecting to {host} timed out after {timeout:g} s. "
            "Check that this computer is online and try again."
        )
    if isinstance(error, httpx2.ConnectError):
        return _ChildFailure(
            f"No internet connection: could not connect to {host} ({error}). Check that this "
            "computer is online and try again."
        )
    if isinstance(error, httpx2.TimeoutException):
        return _ChildFailure(
            f"The connection timed out: {host} sent no data for {timeout:g} s while sending "
            f"{resource}. Check the internet connection and try again; a download continues "
            "where it stopped."
        )
    if isinstance(error, httpx2.TransportError):
        return _ChildFailure(
            f"The connection to {host} failed while fetching {resource} ({error}). Start the "
            "download again; it continues where it stopped."
        )
    if isinstance(error, errors.GatedRepoError):
        return _ChildFailure(
            f"{resource} on {host} requires signing in and accepting its terms, which kl3m-desk "
            "does not do. Download the model in a browser and open its folder instead."
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return _ChildFailure(f"{resource} was not found on {host}. Check the model name.")
    if isinstance(error, errors.RevisionNotFoundError):
        return _ChildFailure(f"{resource} has no such revision on {host}. Check the revision.")
    if isinstance(error, errors.HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "unknown"
        return _ChildFailure(
            f"{host} returned HTTP status {status} for {resource}. Try again later."
        )
    if isinstance(error, errors.HFValidationError):
        return _ChildFailure(f"{resource} is not a valid model name ({error}).")
    return _ChildFailure(f"Fetching {resource} from {host} failed: {error!r}.")


def _child_model_info(
    repo_id: str, revision: str, endpoint: str | None, timeout: float
) -> dict[str, Any]:
    import httpx2
    from huggingface_hub import HfApi, errors

    api = HfApi(endpoint=endpoint, token=False, library_name=APP_NAME, library_version=__version__)
    resource = f"the model {repo_id}"
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    except (httpx2.HTTPError, errors.HfHubHTTPError, errors.HFValidationError) as error:
        raise _describe_failure(
            error, endpoint=endpoint, timeout=timeout, resource=resource
        ) from error
    if not info.sha:
        raise _ChildFailure(
            f"{_host_of(endpoint)} did not resolve revision {revision} of {resource}."
        )
    files: list[tuple[str, int, str | None, str | None]] = []
    for sibling in info.siblings or []:
        if sibling.lfs is not None:
            files.append((sibling.rfilename, sibling.lfs.size, sibling.lfs.sha256, None))
        else:
            size = sibling.size if sibling.size is not None else -1
            files.append((sibling.rfilename, size, None, sibling.blob_id))
    return {"revision": info.sha, "files": files}


class _ProgressSender:
    """Sends the running byte counts to the app's process at most every `_PROGRESS_INTERVAL`."""

    def __init__(self, sender: Connection, done: int) -> None:
        self._sender = sender
        self.done = done
        self.transferred = 0
        self._last_sent = 0.0

    def add(self, count: int) -> None:
        self.done += count
        self.transferred += count
        if time.monotonic() - self._last_sent >= _PROGRESS_INTERVAL:
            self.send()

    def rewind(self, count: int) -> None:
        self.done -= count

    def send(self) -> None:
        self._sender.send(("progress", self.done, self.transferred))
        self._last_sent = time.monotonic()


def _child_download(
    sender: Connection, plan: DownloadPlan, staging: str, endpoint: str | None, timeout: float
) -> int:
    """Fetch every file of `plan` that is not yet in `staging`; return the bytes transferred."""
    from huggingface_hub.utils import build_hf_headers, get_session

    folder = Path(staging)
    headers = build_hf_headers(token=False, library_name=APP_NAME, library_version=__version__)
    # Ranges count bytes of the file itself, so the server must not compress the response.
    headers["Accept-Encoding"] = "identity"
    reporter = _ProgressSender(sender, sum(_staged_bytes(folder, remote) for remote in plan.files))
    reporter.send()
    session = get_session()
    for remote in plan.files:
        final = folder / remote.name
        if final.is_file() and final.stat().st_size == remote.size:
            continue
        part = folder / (remote.name + PART_SUFFIX)
        _child_fetch_file(session, headers, plan, remote, part, endpoint, timeout, reporter)
        try:
            part.replace(final)
        except OSError as error:
            raise _ChildFailure(
                f"Could not write {final}: {error.strerror}. Check that {folder} is writable."
            ) from error
    reporter.send()
    return reporter.transferred


def _child_fetch_file(
    session: Any,
    headers: dict[str, str],
    plan: DownloadPlan,
    remote: RemoteFile,
    part: Path,
    endpoint: str | None,
    timeout: float,
    reporter: _ProgressSender,
) -> None:
    """Stream `remote` into `part`, continuing from the bytes it already contains."""
    import httpx2
    from huggingface_hub import errors, hf_hub_url

    url = hf_hub_url(plan.repo_id, remote.name, revision=plan.revision, endpoint=endpoint)
    resource = f"{remote.name} of {plan.repo_id}"
    attempts_without_data = 0
    while True:
        have = part.stat().st_size if part.is_file() else 0
        if have > remote.size:
            part.unlink()
            reporter.rewind(remote.size)  # the starting count included at most the file's size
            have = 0
        if have == remote.size:
            part.touch()
            return
        before = reporter.transferred
        try:
            _child_stream(session, url, headers, remote, part, have, timeout, reporter)
        except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError) as error:
            # The connection dropped. Reconnect and continue, unless it keeps failing at once.
            attempts_without_data = 0 if reporter.transferred > before else attempts_without_data
            attempts_without_data += 1
            if attempts_without_data >= _MAX_ATTEMPTS_WITHOUT_DATA:
                raise _describe_failure(
                    error, endpoint=endpoint, timeout=timeout, resource=resource
                ) from error
            time.sleep(0.5)
            continue
        except (httpx2.HTTPError, errors.HfHubHTTPError) as error:
            raise _describe_failure(
                error, endpoint=endpoint, timeout=timeout, resource=resource
            ) from error
        except OSError as error:
            raise _ChildFailure(
                f"Could not write {part}: {error.strerror}. Check that {part.parent} is writable "
                "and that the disk has free space."
            ) from error
        received = part.stat().st_size
        if received != remote.size:
            raise _ChildFailure(
                f"The download of {remote.name} is incomplete: the server ended it after "
                f"{received} of {remote.size} bytes. Start the download again; if this repeats, "
                "the server is sending a damaged file."
            )
        return


def _child_stream(
    session: Any,
    url: str,
    headers: dict[str, str],
    remote: RemoteFile,
    part: Path,
    have: int,
    timeout: float,
    reporter: _ProgressSender,
) -> None:
    from huggingface_hub.utils import hf_raise_for_status

    request_headers = dict(headers)
    if have:
        request_headers["Range"] = f"bytes={have}-"
    with session.stream("GET", url, headers=request_headers, timeout=timeout) as response:
        if response.status_code == 416:
            # The server has no bytes past what is on disk, so the partial file does not match
            # the published one. Start the file again on the next call.
            part.unlink()
            reporter.rewind(have)
            raise _ChildFailure(
                f"The server could not continue the download of {remote.name}. The partial "
                "file was deleted; start the download again."
            )
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        mode = "ab"
        if have and not _continues_at(response, have):
            mode = "wb"  # The server sent the whole file, not the requested range.
            reporter.rewind(have)
        with part.open(mode) as stream:
            for chunk in response.iter_bytes():
                stream.write(chunk)
                reporter.add(len(chunk))
                if stream.tell() > remote.size:
                    raise _ChildFailure(
                        f"The server sent more than the published {remote.size} bytes of "
                        f"{remote.name}. The download was stopped; try again later."
                    )


def _continues_at(response: Any, offset: int) -> bool:
    """Return whether `response` is a 206 whose Content-Range starts at `offset`."""
    if response.status_code != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    unit, _, span = content_range.partition(" ")
    start = span.split("-", 1)[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset
