"""Shared fixtures: an isolated user profile, a tiny random Mixtral and the legal text fixtures.

The tiny model (kl3m_desk.tiny_model) has kl3m-002-520m's architecture and tokenizer at a small
width, with random weights. It is saved with `save_pretrained` as safetensors and loaded through the
app's own loading code.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch
from PySide6.QtCore import QCoreApplication, QEvent

from kl3m_desk.model import LoadedModel, load_model
from kl3m_desk.paths import HOME_VARIABLE
from kl3m_desk.tiny_model import write_tiny_model

REPOSITORY = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KL3M_DESK_SHARED", REPOSITORY.parent / "shared"))
TOKENIZER_DIR = SHARED / "kl3m-001-32k"
LEGAL_DIR = SHARED / "fixtures" / "legal"
DOCUMENTS_DIR = SHARED / "fixtures" / "documents"

HAVE_TOKENIZER = (TOKENIZER_DIR / "tokenizer.json").is_file()
requires_tokenizer = pytest.mark.skipif(
    not HAVE_TOKENIZER, reason=f"the kl3m-001-32k tokenizer is not at {TOKENIZER_DIR}"
)
requires_fixtures = pytest.mark.skipif(
    not LEGAL_DIR.is_dir() or not DOCUMENTS_DIR.is_dir(),
    reason=f"the legal text fixtures are not at {SHARED / 'fixtures'}",
)

# Text with characters that kl3m-001-32k spells as several byte tokens.
TRICKY_TEXT = (
    "§ 2.1 The Licensee—not the Licensor—shall pay “Fees” of €1,200 to the office in 東京 "
    "within thirty (30) days 🙂. Payment under § 4 is final."
)


def legal_fixture_paths() -> list[Path]:
    """Return the legal clause fixtures, or an empty list where they are absent."""
    return sorted(LEGAL_DIR.glob("*.txt")) if LEGAL_DIR.is_dir() else []


@pytest.fixture(autouse=True)
def collect_garbage_after_test() -> Iterator[None]:
    """Destroy each test's widgets and collect its garbage when it ends, while none of its
    threads runs.

    pytest-qt closes a test's widgets and calls `deleteLater` on them, and Qt carries out such
    deletions only when an event loop next runs: in the next test, typically while its inference
    thread loads a model. Destroying a finished test's window there crashed the process with a
    segmentation fault or an abort in a few of every dozen full runs, so the deletions are sent
    here, after pytest-qt has closed the widgets and before the next test starts.
    """
    yield
    if QCoreApplication.instance() is not None:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture(autouse=True)
def isolated_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point settings, logs and data at a temporary folder so no test touches the real profile."""
    home = tmp_path / "profile"
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny random model, written once per test session."""
    folder = tmp_path_factory.mktemp("models") / "tiny-kl3m"
    return write_tiny_model(folder, TOKENIZER_DIR if HAVE_TOKENIZER else None)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> LoadedModel:
    """The tiny model loaded through kl3m_desk.model.load_model."""
    return load_model(tiny_model_dir)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """Make `folder` unwritable for the test, even for root, and writable again afterwards.

    Mode 0o555 stops ordinary users. Root ignores modes, so for root the folder is also marked
    immutable with `chattr +i` where the file system supports it; otherwise the test is skipped.
    """
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(folder)], check=False).returncode == 0
        if not _really_read_only(folder):
            pytest.skip(f"{folder} stays writable for this user, so the test would prove nothing")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def _really_read_only(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.touch()
    except OSError:
        return True
    probe.unlink()
    return False


def hook_engine(
    loaded: LoadedModel,
    before: Callable[[], None] | None = None,
    after: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[], None]:
    """Run `before` ahead of every forward pass of `loaded`'s engine and `after` on its logits.

    Returns a function that removes the hook. A forward pass covers a prompt chunk or one new
    token, as `Engine.forward` does.
    """
    engine = loaded.engine
    original = engine.forward
    previous_hook = engine.__dict__.get("forward")

    def forward(cache: object, ids: object) -> torch.Tensor:
        if before is not None:
            before()
        logits = original(cache, ids)  # type: ignore[arg-type]
        return after(logits) if after is not None else logits

    def remove() -> None:
        if previous_hook is None:
            engine.__dict__.pop("forward", None)
        else:
            engine.forward = previous_hook  # type: ignore[method-assign]

    engine.forward = forward  # type: ignore[method-assign]
    return remove
