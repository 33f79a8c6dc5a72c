"""A stand-in for the Hugging Face Hub on 127.0.0.1, for download tests.

It serves the parts of the Hub API that huggingface_hub 2.4 uses to list and fetch a model:

- `GET /api/models/<repo>[/revision/<revision>]`: the model info, with each file's size, git blob
  id and, for LFS files, the LFS sha256 and size when the query has `blobs=true`.
- `HEAD` and `GET /<repo>/resolve/<revision>/<file>`: files stored in git are served directly
  with `ETag` (the git blob id), `X-Repo-Commit` and `Content-Length`. LFS files respond with a
  302 to `/lfs-objects/<sha256>` on `localhost`, which plays the part of the Hub's storage host, and
  carry `X-Linked-Etag`, `X-Linked-Size` and `X-Repo-Commit`.
- `HEAD` and `GET /lfs-objects/<sha256>`: the LFS content.

Content responses honour `Range: bytes=<start>-[<end>]` with 206 and `Content-Range`, and 416
past the end. Errors carry the `X-Error-Code` header (RepoNotFound, RevisionNotFound,
EntryNotFound) that huggingface_hub turns into its typed errors.

Knobs for tests: `truncate` serves only the first bytes of a file, `corrupt` serves a file with
its bytes changed, and `ignore_range` sends the whole file for range requests, as some servers do.
`stall_after(count)` makes the server stop responding once it has sent `count` body bytes, until
`release_stall` or `stop`. `requests` and `body_bytes_sent` count the traffic.

`loopback_only_process_main` wraps the download process of kl3m_desk.download so that a test can
block and record any connection it makes to an address outside the loopback range.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
_BODY_CHUNK = 64 * 1024
GUARD_LOG_VARIABLE = "KL3M_DESK_TEST_NETWORK_GUARD_LOG"


def git_blob_id(data: bytes) -> str:
    """Return the git blob sha1 of `data`, as the Hub reports it for files stored in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class MockRepo:
    """One revision of a model repository: file contents by name and the commit id."""

    repo_id: str
    commit: str
    files: dict[str, bytes]
    lfs_names: frozenset[str]

    def sibling(self, name: str, with_metadata: bool) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {"rfilename": name}
        if with_metadata:
            entry["size"] = len(data)
            if name in self.lfs_names:
                pointer = (
                    "version https://git-lfs.github.com/spec/v1\n"
                    f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
                ).encode()
                entry["blobId"] = git_blob_id(pointer)
                entry["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": len(pointer),
                }
            else:
                entry["blobId"] = git_blob_id(data)
        return entry


@dataclass
class RequestRecord:
    """One request the mock received."""

    method: str
    path: str
    range: str | None
    authorization: str | None
    user_agent: str | None


@dataclass
class MockHub:
    """A threaded HTTP server on 127.0.0.1 that imitates the Hub for the repositories added."""

    truncate: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    stall_after_bytes: int | None = None
    ignore_range: bool = False
    requests: list[RequestRecord] = field(default_factory=list)
    body_bytes_sent: int = 0

    def __post_init__(self) -> None:
        self._repos: dict[str, MockRepo] = {}
        self._lfs_objects: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._release = threading.Event()  # set whenever the server is not stalling
        self._release.set()
        self.stalled = threading.Event()
        if self.stall_after_bytes is not None:
            self.stall_after(self.stall_after_bytes)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Repositories

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
    ) -> str:
        """Publish `files` as the `main` revision of `repo_id`; returns the new commit id."""
        names = sorted(files)
        commit_source = b"".join(
            name.encode() + b"\0" + git_blob_id(files[name]).encode() for name in names
        )
        commit = hashlib.sha1(repo_id.encode() + b"\0" + commit_source).hexdigest()
        lfs_names = frozenset(name for name in names if name.endswith(lfs_suffixes))
        repo = MockRepo(repo_id, commit, dict(files), lfs_names)
        with self._lock:
            self._repos[repo_id] = repo
            self._repos[f"{repo_id}@{commit}"] = repo
            for name in lfs_names:
                self._lfs_objects[hashlib.sha256(files[name]).hexdigest()] = (name, files[name])
        return commit

    def add_folder(
        self, repo_id: str, folder: Path, extra: Mapping[str, bytes] | None = None
    ) -> str:
        """Publish the files of `folder` (not its subfolders) and `extra` as `repo_id`."""
        files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
        files.update(extra or {})
        return self.add_repo(repo_id, files)

    def commit_of(self, repo_id: str) -> str:
        """Return the commit id of the `main` revision of `repo_id`."""
        return self._repos[repo_id].commit

    # Server

    @property
    def url(self) -> str:
        """The endpoint to pass to kl3m_desk.download, for example http://127.0.0.1:40123."""
        if self._server is None:
            raise RuntimeError("the mock Hub is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """The same server under the name localhost, standing in for the Hub's storage host.

        huggingface_hub follows a redirect to the endpoint's own host but reads the file metadata
        from a redirect to another host, so LFS redirects must name a different host.
        """
        return self.url.replace("127.0.0.1", "localhost", 1)

    def start(self) -> MockHub:
        hub = self

        class Handler(_HubRequestHandler):
            mock = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mock-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MockHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Knobs and counters

    def stall_after(self, count: int) -> None:
        """Stop responding once `count` body bytes have been sent, counted since the last reset."""
        self._release.clear()
        self.stalled.clear()
        self.stall_after_bytes = count

    def release_stall(self) -> None:
        """Stop stalling: held requests end, and later requests get responses again."""
        self.stall_after_bytes = None
        self._release.set()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.body_bytes_sent = 0

    def served_bytes(self, name: str, data: bytes) -> bytes:
        """Apply the `truncate` and `corrupt` knobs to the content of file `name`."""
        if name in self.truncate:
            data = data[: self.truncate[name]]
        if name in self.corrupt and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        return data

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _should_stall(self) -> bool:
        limit = self.stall_after_bytes
        return limit is not None and self.body_bytes_sent >= limit

    def _hold(self) -> None:
        """Block the calling request thread while the server is stalled."""
        self.stalled.set()
        while not self._release.wait(0.05) and not self._closing.is_set():
            pass

    def _count_sent(self, count: int) -> None:
        with self._lock:
            self.body_bytes_sent += count

    def _find_repo(self, repo_id: str, revision: str) -> MockRepo | None:
        repo = self._repos.get(repo_id)
        if repo is None or revision in ("main", repo.commit):
            return repo
        return self._repos.get(f"{repo_id}@{revision}")


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
_MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<revision>[^/]+))?$")
_LFS_OBJECT = re.compile(r"^/lfs-objects/(?P<sha256>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class _HubRequestHandler(BaseHTTPRequestHandler):
    mock: MockHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of access logs."""

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _handle(self, send_body: bool) -> None:
        mock = self.mock
        split = urlsplit(self.path)
        path = unquote(split.path)
        mock._record(
            RequestRecord(
                method=self.command,
                path=path,
                range=self.headers.get("Range"),
                authorization=self.headers.get("Authorization"),
                user_agent=self.headers.get("User-Agent"),
            )
        )
        if mock._should_stall():
            mock._hold()
            self.close_connection = True
            return

        if match := _MODEL_INFO.match(path):
            with_metadata = parse_qs(split.query).get("blobs", ["false"])[0].lower() == "true"
            self._model_info(match["repo"], match["revision"] or "main", with_metadata)
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["revision"], match["file"], send_body)
        elif match := _LFS_OBJECT.match(path):
            found = mock._lfs_objects.get(match["sha256"])
            if found is None:
                self._error(404, "EntryNotFound", "LFS object not found")
            else:
                name, data = found
                self._content(mock.served_bytes(name, data), send_body, {})
        else:
            self._error(404, None, "Not found")

    def _model_info(self, repo_id: str, revision: str, with_metadata: bool) -> None:
        repo = self.mock._repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        found = self.mock._find_repo(repo_id, revision)
        if found is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        body = {
            "_id": found.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": found.commit,
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": ["transformers", "safetensors", "mixtral", "text-generation"],
            "library_name": "transformers",
            "siblings": [found.sibling(name, with_metadata) for name in sorted(found.files)],
        }
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, True)

    def _resolve(self, repo_id: str, revision: str, name: str, send_body: bool) -> None:
        if repo_id not in self.mock._repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        repo = self.mock._find_repo(repo_id, revision)
        if repo is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        if name not in repo.files:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        data = repo.files[name]
        headers = {"X-Repo-Commit": repo.commit}
        if name in repo.lfs_names:
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update(
                {
                    "Location": f"{self.mock.cdn_url}/lfs-objects/{sha256}",
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{sha256}"',
                }
            )
            self._send(302, b"", headers, send_body)
        else:
            headers["ETag"] = f'"{git_blob_id(data)}"'
            self._content(self.mock.served_bytes(name, data), send_body, headers)

    def _content(self, data: bytes, send_body: bool, headers: dict[str, str]) -> None:
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        requested = self.headers.get("Range")
        if requested is None or self.mock.ignore_range:
            self._send(200, data, headers, send_body)
            return
        match = _RANGE.match(requested.strip())
        start = int(match["start"]) if match else -1
        if not match or start >= len(data):
            headers["Content-Range"] = f"bytes */{len(data)}"
            self._send(416, b"", headers, send_body)
            return
        end = min(int(match["end"]), len(data) - 1) if match["end"] else len(data) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start : end + 1], headers, send_body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, True)

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not send_body or self.command == "HEAD":
            return
        try:
            for offset in range(0, len(body), _BODY_CHUNK):
                if self.mock._should_stall():
                    self.mock._hold()
                    self.close_connection = True
                    return
                chunk = body[offset : offset + _BODY_CHUNK]
                self.wfile.write(chunk)
                self.mock._count_sent(len(chunk))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# Network guard


def is_loopback_host(host: object) -> bool:
    """Return whether `host` (a name or an address) stays on this machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Replacements of socket connect and name resolution that reject non-loopback addresses.

    A rejected call raises PermissionError and is recorded in `violations`, and in the file named
    by the KL3M_DESK_TEST_NETWORK_GUARD_LOG environment variable when it is set, so that a test
    fails even when the code under test catches the error.
    """

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._originals: dict[str, Any] = {}

    def _reject(self, what: str) -> None:
        message = f"blocked a network call outside loopback: {what}"
        self.violations.append(message)
        log_path = os.environ.get(GUARD_LOG_VARIABLE)
        if log_path:
            with open(log_path, "a", encoding="utf-8") as stream:
                stream.write(message + "\n")
        raise PermissionError(message)

    def install(self) -> None:
        original_connect = socket.socket.connect
        original_connect_ex = socket.socket.connect_ex
        original_getaddrinfo = socket.getaddrinfo
        self._originals = {
            "connect": original_connect,
            "connect_ex": original_connect_ex,
            "getaddrinfo": original_getaddrinfo,
        }
        guard = self

        def check_address(sock: Any, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback_host(
                address[0]
            ):
                guard._reject(f"connect to {address!r}")

        def connect(sock: Any, address: Any) -> None:
            check_address(sock, address)
            original_connect(sock, address)

        def connect_ex(sock: Any, address: Any) -> int:
            check_address(sock, address)
            return int(original_connect_ex(sock, address))

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_loopback_host(host):
                guard._reject(f"resolve {host!r}")
            return original_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo

    def uninstall(self) -> None:
        if self._originals:
            socket.socket.connect = self._originals["connect"]  # type: ignore[method-assign]
            socket.socket.connect_ex = self._originals["connect_ex"]  # type: ignore[method-assign]
            socket.getaddrinfo = self._originals["getaddrinfo"]
            self._originals = {}


def loopback_only_process_main(*args: Any) -> None:
    """Run kl3m_desk.download's download process with a NetworkGuard installed.

    Tests put this function in place of `_download_process_main`. The download process is
    spawned, so it imports this module afresh and calls the real entry point.
    """
    from kl3m_desk import download

    NetworkGuard().install()
    download._download_process_main(*args)


def closed_loopback_port() -> int:
    """Return a port on 127.0.0.1 with nothing listening, for an offline endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def loopback_guard(log_path: Path, monkeypatch: Any) -> Iterator[NetworkGuard]:
    """Block and record every connection or name lookup outside 127.0.0.0/8 and ::1.

    The guard covers the test process and, through `loopback_only_process_main`, the download
    process that kl3m_desk.download spawns, which reports violations to `log_path`. On exit it
    asserts that nothing was blocked.
    """
    from kl3m_desk import download

    monkeypatch.setenv(GUARD_LOG_VARIABLE, str(log_path))
    monkeypatch.setattr(download, "_download_process_main", loopback_only_process_main)
    guard = NetworkGuard()
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()
    assert guard.violations == []
    assert not log_path.exists(), log_path.read_text()
