"""A tiny random-weight model with kl3m-002-520m's architecture, for tests and the self-test.

The model is a Mixtral like kl3m-002-520m (4 experts with 2 active per token, sliding window 256,
1,024 positions, untied embeddings) at a small width, so it loads in a fraction of a second and
generates meaningless text quickly. It uses the kl3m-001-32k tokenizer when its files are given,
and otherwise trains a small byte-level BPE tokenizer on a few contract sentences.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
KL3M_VOCABULARY = 32768

_TRAINING_SENTENCES = (
    "This Agreement shall be governed by the laws of the State of Delaware.",
    "The Receiving Party shall hold the Confidential Information in strict confidence.",
    "Either party may terminate this Agreement upon thirty (30) days' written notice.",
    "Section 2.1 (a) The Supplier shall indemnify the Customer against all claims.",
)


def train_fallback_tokenizer(folder: Path) -> int:
    """Train and save a small byte-level BPE tokenizer in `folder`; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|start|>", "<|end|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_TRAINING_SENTENCES) * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|start|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(folder)
    return int(tokenizer.get_vocab_size())


def kl3m_config(**overrides: Any) -> Any:
    """Return a MixtralConfig of kl3m-002-520m's shape, with `overrides` applied.

    Without overrides it is the full model, with 520,193,024 parameters in all. It has 4 experts
    with 2 active per token, hidden size 1,024, 16 layers, 16 attention heads, 8 key/value heads
    and intermediate size 2,048. It has 32,768 ids, 1,024 positions, sliding window 256 and
    untied embeddings. The
    special token ids are those of the kl3m-001-32k tokenizer. Other fields keep the defaults of
    transformers' MixtralConfig.
    """
    from transformers import MixtralConfig

    values: dict[str, Any] = {
        "vocab_size": KL3M_VOCABULARY,
        "hidden_size": 1024,
        "intermediate_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 1024,
        "sliding_window": 256,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
    }
    values.update(overrides)
    return MixtralConfig(**values)


def write_tiny_model(folder: Path, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """Write a tiny random Mixtral and its tokenizer to `folder` as safetensors; returns `folder`.

    With `tokenizer_dir` (a kl3m-001-32k folder), its files are copied and the vocabulary is the
    real 32,768 ids. Without it, a small tokenizer is trained on the spot.
    """
    import torch
    from transformers import MixtralForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, folder / name)
        vocabulary = KL3M_VOCABULARY
    else:
        vocabulary = train_fallback_tokenizer(folder)

    config = kl3m_config(
        vocab_size=vocabulary,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(seed)
    MixtralForCausalLM(config).save_pretrained(folder)
    return folder
