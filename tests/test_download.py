"""Model downloads from a mock Hub on 127.0.0.1: planning, progress, cancel and resume, checks,
time-outs, offline errors, and the app's own process staying offline.

Every test passes an explicit 127.0.0.1 endpoint. An autouse guard blocks and records any
connection or name lookup outside the loopback range, in the test process and in the download
process that kl3m_desk.download spawns.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kl3m_desk import download
from kl3m_desk.download import (
    RECORD_FILE,
    DownloadCancelled,
    DownloadError,
    DownloadPlan,
    RemoteFile,
    download_model,
    format_bytes,
    model_size_text,
    plan_download,
    select_files,
)
from kl3m_desk.model import TOKENIZER_FILES as LOADER_TOKENIZER_FILES
from kl3m_desk.model import load_model
from tests.conftest import read_only_folder
from tests.mock_hub import (
    MockHub,
    NetworkGuard,
    closed_loopback_port,
    git_blob_id,
    is_loopback_host,
    loopback_guard,
)

REPO = "alea-institute/kl3m-tiny-test"
# Files that a real model repository has besides the model, none of which the app needs.
EXTRA_FILES = {
    "README.md": b"# A tiny test model\n",
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "modeling_tiny.py": b"raise SystemExit('remote code must never be downloaded')\n",
    "pytorch_model.bin": b"a pickle checkpoint that must be skipped beside safetensors",
    "onnx/model.onnx": b"an export in a subfolder",
}
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fail the test on any connection or name lookup outside 127.0.0.0/8 and ::1."""
    with loopback_guard(tmp_path / "network-guard.log", monkeypatch) as guard:
        yield guard


@pytest.fixture
def hub(tiny_model_dir: Path) -> Iterator[MockHub]:
    with MockHub() as server:
        server.add_folder(REPO, tiny_model_dir, extra=EXTRA_FILES)
        yield server


@pytest.fixture
def plan(hub: MockHub) -> DownloadPlan:
    return plan_download(REPO, endpoint=hub.url, timeout=TIMEOUT)


def offline_endpoint() -> str:
    return f"http://127.0.0.1:{closed_loopback_port()}"


def staging_of(target: Path) -> Path:
    return target.parent / f".{target.name}.download"


def file_of(plan: DownloadPlan, name: str) -> RemoteFile:
    return next(remote for remote in plan.files if remote.name == name)


def synthetic_plan() -> DownloadPlan:
    """A plan that needs no server, for checks that fail before any request."""
    config = b"{}"
    remote = RemoteFile("config.json", len(config), None, git_blob_id(config))
    return DownloadPlan(REPO, "0" * 40, (remote,), len(config))


# Planning


def test_plan_lists_app_files(hub: MockHub, tiny_model_dir: Path) -> None:
    plan = plan_download(REPO, endpoint=hub.url, timeout=TIMEOUT)

    model_files = sorted(path.name for path in tiny_model_dir.iterdir())
    assert sorted(remote.name for remote in plan.files) == model_files
    assert plan.files[-1].name == "model.safetensors"
    assert plan.revision == hub.commit_of(REPO)
    assert plan.total_bytes == sum(path.stat().st_size for path in tiny_model_dir.iterdir())

    weights = file_of(plan, "model.safetensors")
    weights_bytes = (tiny_model_dir / "model.safetensors").read_bytes()
    assert weights.sha256 == hashlib.sha256(weights_bytes).hexdigest()
    assert weights.size == len(weights_bytes)

    config = file_of(plan, "config.json")
    assert config.sha256 is None
    assert config.blob_id == git_blob_id((tiny_model_dir / "config.json").read_bytes())

    assert [record.path for record in hub.requests] == [f"/api/models/{REPO}/revision/main"]


def test_select_files_prefers_safetensors() -> None:
    names = [
        "config.json",
        "tokenizer.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "modeling_custom.py",
        "original/model.safetensors",
        "README.md",
    ]
    selected = select_files(RemoteFile(name, 1, "0" * 64) for name in names)

    assert [remote.name for remote in selected] == [
        "config.json",
        "tokenizer.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]


def test_select_files_pickle_only_repo() -> None:
    names = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "optimizer.bin",
        "train.py",
    ]
    selected = select_files(RemoteFile(name, 1, "0" * 64) for name in names)

    assert [remote.name for remote in selected] == [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ]


def test_plan_unknown_repo(hub: MockHub) -> None:
    with pytest.raises(DownloadError, match="was not found"):
        plan_download("alea-institute/no-such-model", endpoint=hub.url, timeout=TIMEOUT)


def test_plan_unknown_revision(hub: MockHub) -> None:
    with pytest.raises(DownloadError, match="has no such revision"):
        plan_download(REPO, revision="no-such-branch", endpoint=hub.url, timeout=TIMEOUT)


def test_plan_stalled_server_times_out(hub: MockHub) -> None:
    hub.stall_after(0)
    started = time.monotonic()

    with pytest.raises(DownloadError) as raised:
        plan_download(REPO, endpoint=hub.url, timeout=1.0)

    assert time.monotonic() - started < 10.0
    assert "timed out" in str(raised.value)


def test_plan_repo_without_weights(hub: MockHub) -> None:
    hub.add_repo("alea-institute/tokenizer-only", {"config.json": b"{}", "tokenizer.json": b"{}"})

    with pytest.raises(DownloadError) as raised:
        plan_download("alea-institute/tokenizer-only", endpoint=hub.url, timeout=TIMEOUT)
    assert "has no weights" in str(raised.value)


# Downloading


def test_download_loads_with_load_model(
    hub: MockHub, plan: DownloadPlan, isolated_profile: Path
) -> None:
    calls: list[tuple[int, int, float]] = []

    folder = download_model(
        plan,
        endpoint=hub.url,
        progress=lambda done, total, speed: calls.append((done, total, speed)),
        timeout=TIMEOUT,
    )

    assert folder == isolated_profile / "data" / "models" / "kl3m-tiny-test"
    assert load_model(folder).parameter_count > 0
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted([*(remote.name for remote in plan.files), RECORD_FILE])
    assert not staging_of(folder).exists()

    record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["revision"] == plan.revision
    assert record["complete"] is True

    assert calls, "progress was never reported"
    assert calls[-1][0] == plan.total_bytes
    assert all(total == plan.total_bytes for _, total, _ in calls)
    done_values = [done for done, _, _ in calls]
    assert done_values == sorted(done_values)
    assert all(speed >= 0 for _, _, speed in calls)


def test_download_sends_no_token(
    hub: MockHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hugging Face token in the environment never reaches the server."""
    monkeypatch.setenv("HF_TOKEN", "hf_kl3m_desk_test_token")
    plan = plan_download(REPO, endpoint=hub.url, timeout=TIMEOUT)
    download_model(plan, tmp_path / "models" / "tiny", endpoint=hub.url, timeout=TIMEOUT)

    assert hub.requests
    assert [record.authorization for record in hub.requests] == [None] * len(hub.requests)
    for record in hub.requests:
        assert record.user_agent is not None
        assert record.user_agent.startswith("kl3m-desk/")


def test_download_again_skips_network(hub: MockHub, plan: DownloadPlan, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)
    hub.reset_counters()

    assert download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT) == target
    assert hub.requests == []


def test_cancel_then_resume(hub: MockHub, plan: DownloadPlan, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    weights = file_of(plan, "model.safetensors")
    before_weights = plan.total_bytes - weights.size
    hub.stall_after(before_weights + weights.size // 2)
    cancel = threading.Event()
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            download_model(plan, target, endpoint=hub.url, cancel=cancel, timeout=60)
        except DownloadError as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    assert hub.stalled.wait(30), "the download never reached the stall point"
    cancelled_at = time.monotonic()
    cancel.set()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 2.0
    assert isinstance(outcome.get("error"), DownloadCancelled)
    assert not target.exists()

    part = staging_of(target) / "model.safetensors.part"
    kept_bytes = part.stat().st_size
    assert 0 < kept_bytes < weights.size

    hub.release_stall()
    hub.reset_counters()
    folder = download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)

    assert hub.body_bytes_sent == weights.size - kept_bytes
    assert hub.body_bytes_sent < plan.total_bytes
    ranges = [record.range for record in hub.requests if record.method == "GET"]
    assert f"bytes={kept_bytes}-" in ranges
    assert load_model(folder).parameter_count > 0


@pytest.mark.parametrize("ignore_range", [False, True])
def test_resume_partial_from_earlier_run(
    hub: MockHub, plan: DownloadPlan, tmp_path: Path, tiny_model_dir: Path, ignore_range: bool
) -> None:
    """A .part file left by an earlier app run is continued, or replaced if ranges are ignored."""
    target = tmp_path / "models" / "tiny"
    staging = staging_of(target)
    staging.mkdir(parents=True)
    record = {"repo_id": plan.repo_id, "revision": plan.revision, "complete": False}
    (staging / RECORD_FILE).write_text(json.dumps(record), encoding="utf-8")
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    kept_bytes = len(weights) // 3
    (staging / "model.safetensors.part").write_bytes(weights[:kept_bytes])
    hub.ignore_range = ignore_range
    hub.reset_counters()

    folder = download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)

    expected_sent = plan.total_bytes - (0 if ignore_range else kept_bytes)
    assert hub.body_bytes_sent == expected_sent
    assert (folder / "model.safetensors").read_bytes() == weights
    assert load_model(folder).parameter_count > 0


def test_truncated_file_rejected(hub: MockHub, plan: DownloadPlan, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    hub.truncate["model.safetensors"] = 1000

    with pytest.raises(DownloadError) as raised:
        download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)

    message = str(raised.value)
    assert "model.safetensors" in message
    assert "incomplete" in message
    assert not target.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_checksum_mismatch_rejected(
    hub: MockHub, plan: DownloadPlan, tmp_path: Path, name: str
) -> None:
    target = tmp_path / "models" / "tiny"
    hub.corrupt.add(name)

    with pytest.raises(DownloadError) as raised:
        download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)

    message = str(raised.value)
    assert name in message
    assert "checksum" in message
    assert not target.exists()
    assert not (staging_of(target) / name).exists()

    hub.corrupt.clear()
    hub.reset_counters()
    download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)
    assert hub.body_bytes_sent == file_of(plan, name).size
    assert load_model(target).parameter_count > 0


def test_stalled_server_times_out(hub: MockHub, plan: DownloadPlan, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    hub.stall_after(100_000)
    started = time.monotonic()

    with pytest.raises(DownloadError) as raised:
        download_model(plan, target, endpoint=hub.url, timeout=1.0)

    assert time.monotonic() - started < 10.0
    assert "timed out" in str(raised.value)
    assert not target.exists()


def test_read_only_target_rejected(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only_folder(locked), pytest.raises(DownloadError) as raised:
        download_model(
            synthetic_plan(), locked / "model", endpoint=offline_endpoint(), timeout=TIMEOUT
        )
    assert str(locked) in str(raised.value)
    assert "writ" in str(raised.value)


def test_foreign_folder_rejected(tmp_path: Path) -> None:
    target = tmp_path / "my-notes"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")

    with pytest.raises(DownloadError) as raised:
        download_model(synthetic_plan(), target, endpoint=offline_endpoint(), timeout=TIMEOUT)

    assert str(target) in str(raised.value)
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_new_revision_replaces_download(
    hub: MockHub, plan: DownloadPlan, tiny_model_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "tiny"
    download_model(plan, target, endpoint=hub.url, timeout=TIMEOUT)
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    config["kl3m_desk_test_revision"] = 2
    new_config = json.dumps(config).encode()
    hub.add_folder(REPO, tiny_model_dir, extra={**EXTRA_FILES, "config.json": new_config})

    newer = plan_download(REPO, endpoint=hub.url, timeout=TIMEOUT)
    assert newer.revision != plan.revision
    download_model(newer, target, endpoint=hub.url, timeout=TIMEOUT)

    assert (target / "config.json").read_bytes() == new_config
    record = json.loads((target / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["revision"] == newer.revision
    assert sorted(path.name for path in target.parent.iterdir()) == [
        ".tiny.download.lock",
        "tiny",
    ]


# Offline


def test_plan_offline_message() -> None:
    with pytest.raises(DownloadError) as raised:
        plan_download(REPO, endpoint=offline_endpoint(), timeout=TIMEOUT)
    assert str(raised.value).startswith("No internet connection: ")


def test_download_offline_message(tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"

    with pytest.raises(DownloadError) as raised:
        download_model(synthetic_plan(), target, endpoint=offline_endpoint(), timeout=TIMEOUT)

    assert str(raised.value).startswith("No internet connection: ")
    assert not target.exists()


def test_app_process_stays_offline(hub: MockHub, plan: DownloadPlan, tmp_path: Path) -> None:
    from huggingface_hub import constants, get_session, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from transformers.utils import hub as transformers_hub

    download_model(plan, tmp_path / "models" / "tiny", endpoint=hub.url, timeout=TIMEOUT)
    hub.reset_counters()

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert constants.HF_HUB_OFFLINE is True
    assert transformers_hub.is_offline_mode()
    with pytest.raises((LocalEntryNotFoundError, OfflineModeIsEnabled)):
        hf_hub_download(
            REPO, "missing.json", endpoint=hub.url, local_dir=tmp_path / "hf", token=False
        )
    with pytest.raises(OfflineModeIsEnabled):
        get_session().get(f"{hub.url}/api/models/{REPO}")
    assert hub.requests == []


# The mock itself


def test_mock_hub_serves_hf_hub_download(
    hub: MockHub, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's own download, online for this test only, accepts the mock's responses."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)

    for name in ("model.safetensors", "config.json"):
        path = hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path / "hf", token=False)
        assert Path(path).read_bytes() == (tiny_model_dir / name).read_bytes()

    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    metadata = get_hf_file_metadata(
        hf_hub_url(REPO, "model.safetensors", endpoint=hub.url), token=False
    )
    assert metadata.etag == hashlib.sha256(weights).hexdigest()
    assert metadata.size == len(weights)
    assert metadata.commit_hash == hub.commit_of(REPO)


# Sizes and names


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 bytes"),
        (999, "999 bytes"),
        (950_000, "950.0 kB"),
        (999_960, "1.0 MB"),
        (16_777_216, "16.8 MB"),
        (2_083_000_000, "2.1 GB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_model_size_text() -> None:
    plan = DownloadPlan(REPO, "0" * 40, (), 2_083_000_000)
    assert model_size_text(plan) == "2.1 GB"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        (None, True),
        ("192.0.2.1", False),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
        ("models.invalid", False),
    ],
)
def test_guard_allows_only_loopback(host: str | None, allowed: bool) -> None:
    """The guard's address check, on documentation and reserved names that are never contacted."""
    assert is_loopback_host(host) is allowed


def test_tokenizer_files_match_loader() -> None:
    assert set(download.LOADABLE_TOKENIZER_FILES) == set(LOADER_TOKENIZER_FILES)
    assert set(download.LOADABLE_TOKENIZER_FILES) <= set(download.TOKENIZER_FILES)
