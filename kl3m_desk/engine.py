"""kl3m-desk's own Mixtral forward pass, with a key/value cache that outlives a generation.

transformers' `generate` spends several milliseconds per token on bookkeeping that a single-user
editor does not need (batching, padding masks, cache classes, output objects), and it discards the
document's key/value cache after every call. `Engine` computes the same function as transformers'
`MixtralForCausalLM` with a short loop of torch operations over weights it borrows from the loaded
model, and `KVCache` keeps the keys and values of the last prompt, so that the next prompt computes
only the tokens after the first one that changed.

Attention is the model's own: causal, with a sliding window of `sliding_window` positions (each
position sees itself and the 255 positions before it in kl3m-002-520m), grouped key/value heads
and rotary position embeddings. A position's keys and values depend on every token before it, so
the cache is valid exactly up to the first token that differs from the cached ones. Because the
window caps how far apart a query and a key can be, and rotary embeddings make their score depend
only on that distance, a sequence may run past the model's `max_positions` (see `capacity_for`).

Two weight formats:
- "exact": the loaded model's tensors as they are, multiplied one by one in the order
  transformers uses, so that float32 reproduces transformers' greedy output token for token.
- "fast": the query, key and value projections fused into one matrix product per layer and each
  expert's gate and up projections kept fused as transformers stores them, in the loaded dtype.
  The residual stream, the norms, the rotary embedding, the attention softmax and the router stay
  in float32 whatever the weights' dtype, so a bfloat16 model rounds only its matrix products.

Nothing here imports Qt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

WeightFormat = Literal["exact", "fast"]

# Prompt tokens computed per forward pass when a prompt is longer. Between chunks a cancelled
# prefill stops, keeping the chunks already computed in the cache.
PREFILL_CHUNK = 256


class PrefillCancelled(Exception):
    """A prefill was cancelled. The cache keeps the tokens computed before the cancel."""


@dataclass(frozen=True)
class EngineShape:
    """The sizes of a Mixtral model that the engine needs, read from its configuration."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    experts_per_token: int
    sliding_window: int | None
    max_positions: int
    rms_eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, config: Any) -> EngineShape:
        """Read the shape from a transformers MixtralConfig; ValueError for unsupported ones."""
        if getattr(config, "model_type", None) != "mixtral":
            raise ValueError(
                f'The engine runs Mixtral models, not "{getattr(config, "model_type", None)}".'
            )
        rope = getattr(config, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f'The engine supports default rotary embeddings, not "{rope_type}".')
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        window = getattr(config, "sliding_window", None)
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            heads=heads,
            kv_heads=int(config.num_key_value_heads),
            head_dim=int(head_dim),
            experts=int(config.num_local_experts),
            experts_per_token=int(config.num_experts_per_tok),
            sliding_window=int(window) if window else None,
            max_positions=int(config.max_position_embeddings),
            rms_eps=float(config.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
        )


class KVCache:
    """Keys, values and token ids of one token sequence, for every layer.

    `tokens[i]` is the token whose keys and values sit at position i. The buffers are allocated
    once for `capacity` positions: for kl3m-002-520m's 2,048 that is 128 MB in float32 and 64 MB
    in bfloat16.
    """

    def __init__(
        self, shape: EngineShape, capacity: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        size = (shape.layers, shape.kv_heads, capacity, shape.head_dim)
        self.capacity = capacity
        self.keys = torch.zeros(size, dtype=dtype, device=device)
        self.values = torch.zeros(size, dtype=dtype, device=device)
        self.tokens: list[int] = []

    @property
    def length(self) -> int:
        """Number of positions whose keys and values are valid."""
        return len(self.tokens)

    def common_prefix(self, ids: Sequence[int]) -> int:
        """Return how many leading `ids` match the cached tokens."""
        count = 0
        for cached, wanted in zip(self.tokens, ids, strict=False):
            if cached != wanted:
                break
            count += 1
        return count

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on."""
        del self.tokens[length:]

    def clear(self) -> None:
        """Forget every position."""
        self.tokens.clear()


def capacity_for(shape: EngineShape) -> int:
    """Return how many positions one token sequence may span in the engine.

    Attention scores under rotary embeddings depend only on the distance between two positions,
    and a sliding window caps that distance, so a model with a window shorter than its
    `max_positions` computes at positions past them exactly what it computes before them: no
    query ever attends to a key more than `sliding_window - 1` positions away. Such a model gets
    twice its positions, which lets a prompt window stay put, and its cache stay valid, while the
    user writes about another 1,000 tokens. A model without a window keeps its own limit.
    """
    window = shape.sliding_window
    if window is not None and window < shape.max_positions:
        return 2 * shape.max_positions
    return shape.max_positions


class _Layer:
    """One decoder layer's weights in the layout the engine multiplies them in."""

    def __init__(self, module: Any, shape: EngineShape, weights: WeightFormat) -> None:
        attention = module.self_attn
        self.attention_norm = module.input_layernorm.weight.detach().float()
        self.moe_norm = module.post_attention_layernorm.weight.detach().float()
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        q, k, v = (projection.weight.detach() for projection in projections)
        self.split = (q.shape[0], k.shape[0], v.shape[0])
        # Exact keeps the three products that transformers computes. Fast fuses them into one,
        # and the projections become views of the fused matrix, so no weight is stored twice.
        if weights == "exact":
            self.qkv: tuple[torch.Tensor, ...] = (q, k, v)
        else:
            fused = torch.cat([q, k, v])
            self.qkv = (fused,)
            for projection, part in zip(projections, fused.split(self.split), strict=True):
                projection.weight = torch.nn.Parameter(part, requires_grad=False)
        self.output = attention.o_proj.weight.detach()
        # The router is tiny (experts x hidden) and picks which experts run, so it stays float32.
        self.router = module.mlp.gate.weight.detach().float()
        experts = module.mlp.experts
        self.gate_up = [experts.gate_up_proj[e].detach() for e in range(shape.experts)]
        self.down = [experts.down_proj[e].detach() for e in range(shape.experts)]
        self.activation = experts.act_fn


class Engine:
    """A Mixtral forward pass over borrowed weights; see the module docstring.

    Build one with `Engine(model, weights)` after the model is on its device in its dtype. The
    engine keeps references to the model's tensors (and, in "fast" format, one fused copy of the
    attention projections), so the model's own modules may be dropped afterwards.
    """

    def __init__(self, model: Any, weights: WeightFormat = "fast") -> None:
        self.shape = EngineShape.from_config(model.config)
        self.weights = weights
        parameter = model.lm_head.weight
        self.dtype: torch.dtype = parameter.dtype
        self.device: torch.device = parameter.device
        decoder = model.model
        with torch.no_grad():
            self.embedding = decoder.embed_tokens.weight.detach()
            self.layers = [_Layer(layer, self.shape, weights) for layer in decoder.layers]
            self.final_norm = decoder.norm.weight.detach().float()
            self.lm_head = model.lm_head.weight.detach()
        self.vocabulary = int(self.lm_head.shape[0])
        self.capacity = capacity_for(self.shape)
        inverse = 1.0 / (
            self.shape.rope_theta
            ** (
                torch.arange(0, self.shape.head_dim, 2, dtype=torch.float32, device=self.device)
                / self.shape.head_dim
            )
        )
        positions = torch.arange(self.capacity, dtype=torch.float32, device=self.device)
        frequencies = positions[:, None] * inverse[None, :]
        angles = torch.cat([frequencies, frequencies], dim=-1)
        self._cos = angles.cos()
        self._sin = angles.sin()
        self._scale = self.shape.head_dim**-0.5
        self._lock = threading.Lock()

    def new_cache(self) -> KVCache:
        """Return an empty cache for this engine's model, dtype and device."""
        return KVCache(self.shape, self.capacity, self.dtype, self.device)

    # -- public entry points -------------------------------------------------------------------

    def prefill(
        self,
        cache: KVCache,
        ids: Sequence[int],
        cancel: threading.Event | None = None,
        chunk: int = PREFILL_CHUNK,
    ) -> torch.Tensor:
        """Bring `cache` to `ids` and return the float32 logits after the last id.

        Positions whose tokens match the cache are reused. At least the last id is computed again
        when all of them match, since its logits are not kept. The last id always goes through
        the one-token path that `step` uses, alone: in bfloat16 a token computed inside a chunk
        rounds differently, and the first generated token would then depend on how much of the
        prompt the cache held. Raises PrefillCancelled when
        `cancel` is set between chunks, and ValueError when `ids` is empty or longer than the
        engine's `capacity`.
        """
        if not ids:
            raise ValueError("The prompt is empty; pass at least one token id.")
        if len(ids) > self.capacity:
            raise ValueError(
                f"The prompt has {len(ids)} tokens, more than the engine's {self.capacity} "
                "positions."
            )
        reused = min(cache.common_prefix(ids), len(ids) - 1)
        cache.truncate(reused)
        position = reused
        last = len(ids) - 1
        while position < last:
            if cancel is not None and cancel.is_set():
                raise PrefillCancelled
            end = min(last, position + chunk)
            self.forward(cache, ids[position:end])
            position = end
        if cancel is not None and cancel.is_set():
            raise PrefillCancelled
        return self.forward(cache, ids[last:])

    def step(self, cache: KVCache, token: int) -> torch.Tensor:
        """Append `token` to `cache` and return the float32 logits after it."""
        if cache.length >= self.capacity:
            raise ValueError(f"The cache is full at {self.capacity} positions.")
        return self.forward(cache, [token])

    def forward(self, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
        """Compute `ids` at the positions after `cache.length`; returns the last logits."""
        with self._lock, torch.inference_mode():
            start = cache.length
            count = len(ids)
            token_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
            hidden = F.embedding(token_ids, self.embedding).float()
            cos = self._cos[start : start + count]
            sin = self._sin[start : start + count]
            low = self._window_start(start)
            mask = self._mask(start, count, low)
            for index, layer in enumerate(self.layers):
                hidden = self._layer(layer, index, hidden, cache, start, cos, sin, low, mask)
            cache.tokens.extend(int(token) for token in ids)
            last = self._norm(hidden[-1:], self.final_norm)
            logits = F.linear(last, self.lm_head)
            return logits[0].float()

    def logits_for(self, ids: Sequence[int]) -> torch.Tensor:
        """Return the float32 logits at every position of `ids`, computed in one pass.

        Used to compare precisions position by position; it does not touch any cache.
        """
        cache = self.new_cache()
        with self._lock, torch.inference_mode():
            count = len(ids)
            token_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
            hidden = F.embedding(token_ids, self.embedding).float()
            mask = self._mask(0, count, 0)
            for index, layer in enumerate(self.layers):
                hidden = self._layer(
                    layer, index, hidden, cache, 0, self._cos[:count], self._sin[:count], 0, mask
                )
            return F.linear(self._norm(hidden, self.final_norm), self.lm_head).float()

    # -- the forward pass ------------------------------------------------------------------------

    def _window_start(self, start: int) -> int:
        # The first cached position any new token can see: the window of the first new token.
        window = self.shape.sliding_window
        return 0 if window is None else max(0, start - window + 1)

    def _mask(self, start: int, count: int, low: int) -> torch.Tensor | None:
        # Boolean [count, keys] mask: query i (position start + i) attends to key j (position
        # low + j) when the key is not in its future and lies inside its window. A single query
        # at the end needs no mask, since every key from `low` on is in its window.
        if count == 1:
            return None
        queries = torch.arange(start, start + count, device=self.device)[:, None]
        keys = torch.arange(low, start + count, device=self.device)[None, :]
        allowed = keys <= queries
        window = self.shape.sliding_window
        if window is not None:
            allowed &= keys > queries - window
        return allowed

    def _norm(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # RMSNorm in float32, cast to the weights' dtype for the next matrix product.
        variance = hidden.pow(2).mean(-1, keepdim=True)
        normed = hidden * torch.rsqrt(variance + self.shape.rms_eps)
        return (weight * normed).to(self.dtype)

    def _rotate(self, states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # states: [heads, count, head_dim]; rotary embedding in float32.
        states = states.float()
        half = states.shape[-1] // 2
        rotated = torch.cat([-states[..., half:], states[..., :half]], dim=-1)
        return (states * cos + rotated * sin).to(self.dtype)

    def _layer(
        self,
        layer: _Layer,
        index: int,
        hidden: torch.Tensor,
        cache: KVCache,
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        low: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        shape = self.shape
        count = hidden.shape[0]
        x = self._norm(hidden, layer.attention_norm)
        if len(layer.qkv) == 1:
            q, k, v = F.linear(x, layer.qkv[0]).split(layer.split, dim=-1)
        else:
            q, k, v = (F.linear(x, weight) for weight in layer.qkv)
        q = self._rotate(q.view(count, shape.heads, shape.head_dim).transpose(0, 1), cos, sin)
        k = self._rotate(k.view(count, shape.kv_heads, shape.head_dim).transpose(0, 1), cos, sin)
        v = v.view(count, shape.kv_heads, shape.head_dim).transpose(0, 1)
        end = start + count
        cache.keys[index, :, start:end] = k
        cache.values[index, :, start:end] = v
        keys = cache.keys[index, :, low:end]
        values = cache.values[index, :, low:end]
        if count == 1 and self.weights == "fast":
            # One query: grouped heads share their key/value head without copying it, and the
            # softmax runs in float32. PyTorch's fused attention falls back to a slow general
            # path for grouped heads in bfloat16 on the CPU.
            grouped = q.reshape(shape.kv_heads, shape.heads // shape.kv_heads, shape.head_dim)
            scores = torch.matmul(grouped, keys.transpose(1, 2)).float() * self._scale
            weights = torch.softmax(scores, dim=-1).to(self.dtype)
            attended = torch.matmul(weights, values).reshape(1, shape.heads * shape.head_dim)
        elif self.weights == "fast" and shape.heads != shape.kv_heads:
            # Copying each key/value head for its query heads lets PyTorch use its fused CPU
            # kernel, which grouped heads would send to the slow general path.
            groups = shape.heads // shape.kv_heads
            attended = F.scaled_dot_product_attention(
                q[None],
                keys.repeat_interleave(groups, dim=0)[None],
                values.repeat_interleave(groups, dim=0)[None],
                attn_mask=mask,
            )[0]
            attended = attended.transpose(0, 1).reshape(count, shape.heads * shape.head_dim)
        else:
            attended = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, enable_gqa=shape.heads != shape.kv_heads
            )
            attended = attended.transpose(0, 1).reshape(count, shape.heads * shape.head_dim)
        hidden = hidden + F.linear(attended, layer.output).float()

        x = self._norm(hidden, layer.moe_norm)
        router = torch.softmax(F.linear(x.float(), layer.router), dim=-1)
        top_weights, top_experts = torch.topk(router, shape.experts_per_token, dim=-1)
        top_weights /= top_weights.sum(dim=-1, keepdim=True)
        mixed = torch.zeros_like(hidden)
        if count == 1:
            chosen = top_experts[0].tolist()
            for expert in sorted(chosen):
                weight = top_weights[0, chosen.index(expert)]
                mixed += self._expert(layer, expert, x).float() * weight
        else:
            for expert in range(shape.experts):
                rows, slots = torch.where(top_experts == expert)
                if rows.numel() == 0:
                    continue
                output = self._expert(layer, expert, x[rows]).float()
                mixed.index_add_(0, rows, output * top_weights[rows, slots, None])
        return hidden + mixed

    def _expert(self, layer: _Layer, expert: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, layer.gate_up[expert]).chunk(2, dim=-1)
        return F.linear(layer.activation(gate) * up, layer.down[expert])
