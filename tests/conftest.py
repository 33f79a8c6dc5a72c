"""Shared fixtures: an isolated user profile, a tiny random Mixtral and the legal text fixtures.

The tiny model has kl3m-002-520m's architecture and tokenizer (Mixtral, 4 experts with 2 active,
sliding window 256, 1,024 positions, untied embeddings) at a small width, with random weights. It is
saved with `save_pretrained` as safetensors and loaded through the app's own loading code.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from kl3m_desk.model import LoadedModel, load_model
from kl3m_desk.paths import HOME_VARIABLE

REPOSITORY = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KL3M_DESK_SHARED", REPOSITORY.parent / "shared"))
TOKENIZER_DIR = SHARED / "kl3m-001-32k"
LEGAL_DIR = SHARED / "fixtures" / "legal"
DOCUMENTS_DIR = SHARED / "fixtures" / "documents"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

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
def isolated_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point settings, logs and data at a temporary folder so no test touches the real profile."""
    home = tmp_path / "profile"
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home


def _train_fallback_tokenizer(folder: Path) -> int:
    """Train a small byte-level BPE tokenizer where the kl3m-001-32k files are absent."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|start|>", "<|end|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "This Agreement shall be governed by the laws of the State of Delaware.",
        "The Receiving Party shall hold the Confidential Information in strict confidence.",
        "Either party may terminate this Agreement upon thirty (30) days' written notice.",
    ] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|start|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(folder)
    return int(tokenizer.get_vocab_size())


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random Mixtral with the kl3m-001-32k tokenizer (or a fallback) to `folder`."""
    from transformers import MixtralConfig, MixtralForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if HAVE_TOKENIZER:
        for name in TOKENIZER_FILES:
            if (TOKENIZER_DIR / name).is_file():
                shutil.copyfile(TOKENIZER_DIR / name, folder / name)
        vocabulary = 32768
    else:
        vocabulary = _train_fallback_tokenizer(folder)
    config = MixtralConfig(
        vocab_size=vocabulary,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=1024,
        sliding_window=256,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    MixtralForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny random model, written once per test session."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-kl3m")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> LoadedModel:
    """The tiny model loaded through kl3m_desk.model.load_model."""
    return load_model(tiny_model_dir)


@pytest.fixture
def slow_model(tiny_model: LoadedModel) -> Iterator[LoadedModel]:
    """The tiny model slowed to about 50 tokens/s, so GUI tests can act while it streams."""
    import time

    def pause(_module: object, _args: object) -> None:
        time.sleep(0.02)

    handle = tiny_model.model.register_forward_pre_hook(pause)
    try:
        yield tiny_model
    finally:
        handle.remove()
