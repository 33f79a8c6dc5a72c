"""Reading a Mixtral checkpoint one tensor at a time, straight into the dtype it will run in.

transformers' `from_pretrained` maps every weight file for the whole load. The operating system
counts each page read through a mapping as resident until the mapping closes, so loading
kl3m-002-520m's 2.1 GB float32 file into bfloat16 peaked at about 3.2 GB here. Reading each tensor
through its own short-lived mapping and converting it at once peaked at 1.2 GB. `read_mixtral`
does the latter and builds the transformers model around the tensors, so the rest of the app sees
the same `MixtralForCausalLM` either way. It reads the two ways Mixtral checkpoints name their
expert weights. For anything else it returns None, and the caller falls back to `from_pretrained`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

# Checkpoints written by transformers 4 (and by 5, which converts back on saving) keep one
# tensor per expert and projection: w1 is the gate, w3 the up and w2 the down projection.
# transformers 5 stores each layer's experts as two stacked tensors, gate and up concatenated.
_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
_ROUTER = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.gate\.weight$")


def read_mixtral(
    folder: Path, weight_files: Sequence[Path], config: Any, dtype: torch.dtype
) -> Any | None:
    """Return a MixtralForCausalLM with the weights of `weight_files` in `dtype`, or None.

    None means the checkpoint's tensor names or shapes match neither Mixtral layout, and nothing
    was kept in memory then. Exceptions from reading the files propagate.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    if getattr(config, "model_type", None) != "mixtral":
        return None
    state = _read_state(weight_files, dtype, int(config.num_local_experts))
    if state is None:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        log.info("The weights in %s do not fit the model's layout: %s", folder, error)
        return None
    # Buffers that are not saved with the weights (the rotary frequencies) are computed afresh.
    decoder = model.model
    decoder.rotary_emb = type(decoder.rotary_emb)(config=model.config)
    if any(tensor.is_meta for tensor in (*model.parameters(), *model.buffers())):
        log.info("Some tensors of the model in %s have no weights in the checkpoint", folder)
        return None
    if (folder / "generation_config.json").is_file():
        try:
            model.generation_config = GenerationConfig.from_pretrained(folder)
        except (OSError, ValueError) as error:
            log.warning("Ignoring %s: %s", folder / "generation_config.json", error)
    return model.eval()


def _read_state(
    weight_files: Sequence[Path], dtype: torch.dtype, experts: int
) -> dict[str, torch.Tensor] | None:
    state: dict[str, torch.Tensor] = {}
    # layer prefix -> projection -> expert -> tensor
    expert_parts: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for weight_file in weight_files:
        with safe_open(str(weight_file), framework="pt") as handle:
            names = list(handle.keys())
        for name in names:
            tensor = _read_tensor(weight_file, name, dtype)
            if match := _EXPERT.match(name):
                prefix, expert, projection = match.group(1), int(match.group(2)), match.group(3)
                expert_parts.setdefault(prefix, {}).setdefault(projection, {})[expert] = tensor
            elif match := _ROUTER.match(name):
                state[f"{match.group(1)}.mlp.gate.weight"] = tensor
            else:
                state[name] = tensor
    for prefix in list(expert_parts):
        projections = expert_parts.pop(prefix)  # frees each layer's parts once it is stacked
        if sorted(projections) != ["w1", "w2", "w3"] or any(
            sorted(parts) != list(range(experts)) for parts in projections.values()
        ):
            return None
        gate, up, down = (projections[name] for name in ("w1", "w3", "w2"))
        state[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([gate.pop(e), up.pop(e)]) for e in range(experts)]
        )
        downs = [down.pop(e) for e in range(experts)]
        state[f"{prefix}.mlp.experts.down_proj"] = torch.stack(downs)
    return state


def _read_tensor(weight_file: Path, name: str, dtype: torch.dtype) -> torch.Tensor:
    # Each tensor gets its own mapping, closed before the next one opens, and is copied out of it
    # (into 64-byte aligned memory) in the target dtype.
    with safe_open(str(weight_file), framework="pt") as handle:
        stored = handle.get_tensor(name)
    if not stored.is_floating_point():
        return stored.clone()
    return stored.to(dtype, copy=True)
