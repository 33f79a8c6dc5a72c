"""Compare the model card's transformers pipeline with the kl3m-desk engine on one model folder.

Usage: python benchmarks/bench_inference.py MODEL_DIR [--output docs/benchmarks.md]
       [--new-tokens 64] [--repeats 1] [--seed 1234]

Each way of running the model runs in its own subprocess, so that peak resident memory is measured
per way:
- pipeline: `transformers.pipeline("text-generation", ...)` on the CPU in float32, as the
  kl3m-002-520m model card shows it.
- engine-fast: `load_and_place(folder, precision="fast")`, the app's default, then requests as
  the app's inference thread makes them.
- engine-exact: the same with `precision="exact"`, which is CPU float32.

The engine ways keep one `KVCache` and the previous prompt's window start (`anchor`) from one
request to the next, as the app does, so a request after a completion computes only the tokens
from the first one that changed. The pipeline computes every request from scratch.

The prompts are the legal clause fixtures (`fixtures/legal/*.txt` in the shared folder beside the
repository, or in $KL3M_DESK_SHARED), joined, repeated as needed and cut to exactly 900 and 200
tokens with the model's tokenizer. The "edited" prompt is the 900-token prompt with its last
sentence replaced. Results go to their own section of a Markdown page (default
docs/benchmarks.md), and the rest of the page is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from report_page import replace_section

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPOSITORY.parent / "shared"
SHARED_ENV = "KL3M_DESK_SHARED"
DEFAULT_OUTPUT = REPOSITORY / "docs" / "benchmarks.md"
REPORT_SECTION = "inference"  # this script's section of the output page

LONG_PROMPT_TOKENS = 900
SHORT_PROMPT_TOKENS = 200
TEMPERATURE = 0.5
CHILD_TIMEOUT_SECONDS = 900
EDITED_SENTENCE = (
    " This Agreement shall be governed by the laws of the State of Delaware, without regard to "
    "its conflict of laws rules."
)

WAYS = ("pipeline", "engine-fast", "engine-exact")
ENGINE_WAYS = ("engine-fast", "engine-exact")
WAY_LABELS = {
    "pipeline": "transformers pipeline, CPU float32 (baseline)",
    "engine-fast": "kl3m-desk engine, Fast",
    "engine-exact": "kl3m-desk engine, Exact (CPU float32)",
}


@dataclass(frozen=True)
class Prompts:
    """Prompt texts shared by all ways, with their token counts from the model's tokenizer."""

    long: str
    long_tokens: int
    edited: str
    edited_tokens: int
    short: str
    short_tokens: int


@dataclass(frozen=True)
class RunTiming:
    """Timing of one generation: prompt tokens seen by the model, TTFT and decode speed."""

    prompt_tokens: int
    ttft_seconds: float  # from the generation call to the first new token
    new_tokens: int
    decode_tokens_per_second: float  # tokens after the first, divided by the time after it
    reused_tokens: int = 0  # prompt tokens whose keys and values came from the engine's cache


# Runs one request: the text before the cursor, and whether it starts a new session (the engine
# then starts from an empty cache and no anchor). Returns the timing and the completion's text.
Generate = Callable[[str, bool], tuple[RunTiming, str]]


# ---------------------------------------------------------------------------------------------
# Prompts


def find_fixture_files() -> list[Path]:
    """Return the legal clause fixtures, sorted by name, or exit with a message if none exist."""
    shared = Path(os.environ.get(SHARED_ENV) or DEFAULT_SHARED).expanduser()
    folder = shared / "fixtures" / "legal"
    files = sorted(folder.glob("*.txt"))
    if not files:
        sys.exit(
            f"No legal clause fixtures (*.txt) found in {folder}. "
            f"Set {SHARED_ENV} to the shared folder that contains fixtures/legal."
        )
    return files


def cut_to_tokens(tokenizer: Any, ids: list[int], count: int) -> str:
    """Return the text of the first `count` ids, adjusted so it re-tokenizes to exactly `count`.

    Decoding and re-encoding can merge or split tokens at the cut, so nearby cut points are tried
    until one round-trips to the exact count.
    """
    for cut in [count, *(count + offset for offset in (-1, 1, -2, 2, -3, 3, -4, 4))]:
        text: str = tokenizer.decode(ids[:cut], clean_up_tokenization_spaces=False)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == count:
            return text
    raise RuntimeError(f"No cut of the fixture text re-tokenizes to exactly {count} tokens.")


def replace_last_sentence(text: str) -> str:
    """Return `text` with its last sentence, whole or cut off by the token limit, replaced."""
    stripped = text.rstrip()
    boundary = stripped.rfind(".", 0, len(stripped) - 1)
    return stripped[: boundary + 1] + EDITED_SENTENCE


def build_prompts(model_dir: Path) -> Prompts:
    """Cut the long, edited and short prompts from the fixtures with the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    corpus = "\n\n".join(path.read_text(encoding="utf-8").strip() for path in find_fixture_files())
    text = corpus
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < LONG_PROMPT_TOKENS + 10:
        text = text + "\n\n" + corpus
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    def count(value: str) -> int:
        return len(tokenizer(value, add_special_tokens=False)["input_ids"])

    long = cut_to_tokens(tokenizer, ids, LONG_PROMPT_TOKENS)
    edited = replace_last_sentence(long)
    short = cut_to_tokens(tokenizer, ids, SHORT_PROMPT_TOKENS)
    return Prompts(
        long=long,
        long_tokens=count(long),
        edited=edited,
        edited_tokens=count(edited),
        short=short,
        short_tokens=count(short),
    )


# ---------------------------------------------------------------------------------------------
# Measurement inside a child process


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB.

    ru_maxrss is in KiB on Linux and in bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return peak / divisor


def median_timing(runs: list[RunTiming]) -> dict[str, Any]:
    """Return the median TTFT, decode speed and reused tokens over repeated runs of one request."""
    return {
        "prompt_tokens": runs[0].prompt_tokens,
        "ttft_seconds": statistics.median(run.ttft_seconds for run in runs),
        "new_tokens": runs[0].new_tokens,
        "decode_tokens_per_second": statistics.median(run.decode_tokens_per_second for run in runs),
        "reused_tokens": statistics.median(run.reused_tokens for run in runs),
        "runs": [asdict(run) for run in runs],
    }


def run_pipeline(
    model_dir: Path, prompts: Prompts, new_tokens: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Measure the model card's pipeline: load, then run every scenario `repeats` times."""
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    transformers.utils.logging.disable_progress_bar()

    class TimingStreamer(BaseStreamer):
        """Records when each new token arrives; generate's first put() carries the prompt ids."""

        def __init__(self) -> None:
            self.prompt_tokens = 0
            self.token_times: list[float] = []

        def put(self, value: Any) -> None:
            if not self.prompt_tokens and not self.token_times:
                self.prompt_tokens = int(value.shape[-1])
                return
            self.token_times.append(time.perf_counter())

        def end(self) -> None:
            pass

    started = time.perf_counter()
    generator = transformers.pipeline(
        "text-generation", model=str(model_dir), dtype=torch.float32, device="cpu"
    )
    ready_seconds = time.perf_counter() - started

    def generate(text: str, new_session: bool) -> tuple[RunTiming, str]:
        # The pipeline keeps nothing between calls, so every request is a new session.
        transformers.set_seed(seed)
        streamer = TimingStreamer()
        call_started = time.perf_counter()
        outputs = generator(
            text,
            do_sample=True,
            temperature=TEMPERATURE,
            max_new_tokens=new_tokens,
            streamer=streamer,
            return_full_text=False,
        )
        timing = timing_from_token_times(streamer.prompt_tokens, call_started, streamer.token_times)
        return timing, str(outputs[0]["generated_text"])

    return measure_scenarios(generate, prompts, repeats) | {
        "ready_seconds": ready_seconds,
        "device": "cpu",
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "device_reason": "transformers pipeline with dtype=torch.float32, device='cpu'.",
    }


def run_engine(
    model_dir: Path, prompts: Prompts, new_tokens: int, repeats: int, seed: int, precision: str
) -> dict[str, Any]:
    """Measure the kl3m-desk engine loaded by `load_and_place` in `precision` ("fast", "exact").

    Requests follow `InferenceWorker.generate`: one cache, the previous prompt's start as the
    anchor and the previous prompt's and completion's tokens as the history carry over from one
    request to the next, until a new session replaces the cache.
    """
    import torch
    import transformers  # noqa: F401  (imported before the clock starts, as for the pipeline)

    from kl3m_desk.device import load_and_place
    from kl3m_desk.engine import KVCache
    from kl3m_desk.generation import build_prompt, stream_completion
    from kl3m_desk.params import SamplingParams

    started = time.perf_counter()
    loaded = load_and_place(model_dir, device="auto", precision=precision)
    ready_seconds = time.perf_counter() - started

    # Temperature 0.5 as in the pipeline call; the engine's other filters are turned off.
    params = SamplingParams.defaults().replace(
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        max_new_tokens=new_tokens,
        seed=seed,
    )
    cache: KVCache = loaded.engine.new_cache()
    cache_mb = (cache.keys.nbytes + cache.values.nbytes) / 1024 / 1024
    anchor: int | None = None
    history: list[int] = []

    def generate(text: str, new_session: bool) -> tuple[RunTiming, str]:
        nonlocal cache, anchor, history
        if new_session:
            # The old cache is released before the new one is allocated, so that peak memory
            # counts one cache, as in the app. Allocation is outside the clock, because the app
            # allocates its cache when the model loads.
            del cache
            cache = loaded.engine.new_cache()
            anchor = None
            history = []
        call_started = time.perf_counter()
        prompt = build_prompt(loaded, text, new_tokens, anchor, history)
        anchor = prompt.start
        result = stream_completion(loaded, prompt, params, lambda piece: None, cache=cache)
        elapsed = time.perf_counter() - call_started
        # As the inference thread does: an accepted completion is read back as its own tokens.
        spelled = loaded.tokenizer.decode(
            result.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        history = [*prompt.ids, *result.token_ids] if spelled == result.text else list(prompt.ids)
        # TTFT counts tokenization, as the pipeline's does: everything except the decode time.
        timing = RunTiming(
            prompt_tokens=prompt.used,
            ttft_seconds=elapsed - result.decode_seconds,
            new_tokens=len(result.token_ids),
            decode_tokens_per_second=result.tokens_per_second,
            reused_tokens=result.reused_tokens,
        )
        return timing, result.text

    return measure_scenarios(generate, prompts, repeats) | {
        "ready_seconds": ready_seconds,
        "device": loaded.device.type,
        "dtype": loaded.dtype_name,
        "threads": torch.get_num_threads(),
        "device_reason": loaded.device_reason,
        "description": loaded.describe(),
        "precision": loaded.precision,
        "cache_mb": cache_mb,
        "cache_positions": cache.capacity,
    }


def timing_from_token_times(
    prompt_tokens: int, started: float, token_times: list[float]
) -> RunTiming:
    """Turn the arrival times of the new tokens into TTFT and decode tokens/s."""
    if not token_times:
        return RunTiming(prompt_tokens, time.perf_counter() - started, 0, 0.0)
    ttft = token_times[0] - started
    decode_seconds = token_times[-1] - token_times[0]
    speed = (len(token_times) - 1) / decode_seconds if decode_seconds > 0 else 0.0
    return RunTiming(prompt_tokens, ttft, len(token_times), speed)


def measure_scenarios(generate: Generate, prompts: Prompts, repeats: int) -> dict[str, Any]:
    """Run the short prompt, then each repeat's two sessions that start with the long prompt.

    The short prompt runs first, so it also warms up the process. The first session accepts the
    long prompt's completion and requests the next one, as the document then contains the
    completion after the prompt. The second session requests a completion of the long prompt
    with its last sentence replaced, as after the user rewrote that sentence instead of
    accepting. Each session starts with a cold run of the long prompt, so cold TTFT and decode
    are medians of 2 x `repeats` runs.
    """
    short = [generate(prompts.short, True)[0] for _ in range(repeats)]
    cold: list[RunTiming] = []
    accepted: list[RunTiming] = []
    edited: list[RunTiming] = []
    for _ in range(repeats):
        timing, completion = generate(prompts.long, True)
        cold.append(timing)
        accepted.append(generate(prompts.long + completion, False)[0])

        timing, _ = generate(prompts.long, True)
        cold.append(timing)
        edited.append(generate(prompts.edited, False)[0])
    return {
        "short": median_timing(short),
        "cold": median_timing(cold),
        "accepted": median_timing(accepted),
        "edited": median_timing(edited),
    }


def child_main(way: str, spec_path: Path, result_path: Path) -> None:
    """Measure one way as described in the spec file and write the result file."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    prompts = Prompts(**spec["prompts"])
    model_dir = Path(spec["model_dir"])
    arguments = (model_dir, prompts, spec["new_tokens"], spec["repeats"], spec["seed"])
    if way == "pipeline":
        result = run_pipeline(*arguments)
    else:
        result = run_engine(*arguments, precision=way.removeprefix("engine-"))
    result["peak_rss_mb"] = peak_rss_mb()
    result_path.write_text(json.dumps(result, indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Machine description and report


def describe_machine() -> dict[str, str]:
    """Collect the CPU model, core count, RAM, library versions and bfloat16-related CPU flags."""
    import torch
    import transformers

    cpu_model = platform.processor() or platform.machine()
    flags: set[str] = set()
    memory_mb = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags.update(value.split())
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    relevant = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    present = [flag for flag in relevant if flag in flags]
    absent = [flag for flag in relevant if flag not in flags]
    return {
        "CPU": cpu_model,
        "Logical CPUs": str(os.cpu_count()),
        "RAM": memory_mb or "unknown",
        "OS": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "CPU flags present": ", ".join(present) or "none of the listed",
        "CPU flags absent": ", ".join(absent) or "none",
    }


def describe_model(model_dir: Path) -> str:
    """Describe the architecture from config.json and report whether the weights are random.

    make_random_model.py writes a README.md that calls the folder a random-weight stand-in.
    """
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    shape = (
        f"{config.get('model_type', 'unknown')} architecture, "
        f"{config.get('num_hidden_layers', '?')} layers, "
        f"{config.get('num_local_experts', '?')} experts with "
        f"{config.get('num_experts_per_tok', '?')} active per token, "
        f"{config.get('max_position_embeddings', '?')} positions, "
        f"sliding window {config.get('sliding_window') or 'none'}"
    )
    readme = model_dir / "README.md"
    random = readme.is_file() and "random-weight stand-in" in readme.read_text(encoding="utf-8")
    if not random:
        return f"The model folder `{model_dir.name}` has this shape: {shape}."
    return (
        f"The model folder `{model_dir.name}` contains random weights written by "
        f"`benchmarks/make_random_model.py` ({shape}). Speed and memory are those of a model of "
        "this size, but the completions are random tokens rather than legal text."
    )


def run_child(way: str, spec_path: Path, result_path: Path) -> tuple[dict[str, Any], float]:
    """Run one way in a fresh Python process and return its result and wall time in seconds."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        way,
        "--spec",
        str(spec_path),
        "--result",
        str(result_path),
    ]
    print(f"Measuring {WAY_LABELS[way]} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=CHILD_TIMEOUT_SECONDS)
    wall = time.perf_counter() - started
    return json.loads(result_path.read_text(encoding="utf-8")), wall


def ratio(value: float, baseline: float) -> float:
    """Return value / baseline, or NaN when the baseline is zero."""
    return value / baseline if baseline else float("nan")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def absolute_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Return one table row of absolute figures per way."""
    rows = []
    for way, result in results.items():
        rows.append(
            [
                WAY_LABELS[way],
                f"{result['device']} {result['dtype']}, {result['threads']} threads",
                f"{result['ready_seconds']:.2f}",
                f"{result['short']['ttft_seconds']:.2f}",
                f"{result['cold']['ttft_seconds']:.2f}",
                f"{result['accepted']['ttft_seconds']:.3f}",
                f"{result['edited']['ttft_seconds']:.3f}",
                f"{result['cold']['decode_tokens_per_second']:.1f}",
                f"{result['peak_rss_mb']:.0f}",
            ]
        )
    return rows


def prompt_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Return one row per way with the prompt and new tokens of each scenario and reused tokens."""
    rows = []
    for way, result in results.items():
        cold = result["cold"]
        accepted = result["accepted"]
        edited = result["edited"]
        rows.append(
            [
                WAY_LABELS[way],
                f"{result['short']['prompt_tokens']}",
                f"{cold['prompt_tokens']} / {cold['new_tokens']}",
                f"{accepted['prompt_tokens']} / {accepted['reused_tokens']:.0f}",
                f"{edited['prompt_tokens']} / {edited['reused_tokens']:.0f}",
            ]
        )
    return rows


def ratio_rows(results: dict[str, dict[str, Any]]) -> tuple[list[list[str]], dict[str, float]]:
    """Return ratio rows for each engine way against the pipeline, and the Fast engine's ratios."""
    base = results["pipeline"]
    rows = []
    fast: dict[str, float] = {}
    for way in ENGINE_WAYS:
        result = results[way]
        figures = {
            "decode": ratio(
                result["cold"]["decode_tokens_per_second"],
                base["cold"]["decode_tokens_per_second"],
            ),
            "accept": ratio(result["accepted"]["ttft_seconds"], base["accepted"]["ttft_seconds"]),
            "edit": ratio(result["edited"]["ttft_seconds"], base["edited"]["ttft_seconds"]),
            "cold": ratio(result["cold"]["ttft_seconds"], base["cold"]["ttft_seconds"]),
            "memory": ratio(result["peak_rss_mb"], base["peak_rss_mb"]),
            "ready": ratio(result["ready_seconds"], base["ready_seconds"]),
        }
        if way == "engine-fast":
            fast = figures
        rows.append(
            [
                WAY_LABELS[way],
                f"{figures['decode']:.2f}x",
                f"{figures['accept']:.3f}x",
                f"{figures['edit']:.3f}x",
                f"{figures['cold']:.2f}x",
                f"{figures['memory']:.2f}x",
                f"{figures['ready']:.2f}x",
            ]
        )
    return rows, fast


def target_rows(fast: dict[str, float]) -> list[list[str]]:
    """Compare the Fast engine's ratios with the project's targets."""
    targets = [
        ("Decode speedup", "decode", ">= 8x", fast["decode"] >= 8.0, 2),
        ("TTFT after accepting a completion", "accept", "<= 0.05x", fast["accept"] <= 0.05, 3),
        ("TTFT after an edit of the last sentence", "edit", "<= 0.05x", fast["edit"] <= 0.05, 3),
        ("Cold TTFT, 900-token prompt", "cold", "<= 0.5x", fast["cold"] <= 0.5, 2),
        ("Peak memory", "memory", "<= 0.5x", fast["memory"] <= 0.5, 2),
        ("Model-ready time", "ready", "<= 1.0x", fast["ready"] <= 1.0, 2),
    ]
    return [
        [name, target, f"{fast[key]:.{digits}f}x", "met" if met else "not met"]
        for name, key, target, met, digits in targets
    ]


def describe_ways(results: dict[str, dict[str, Any]]) -> str:
    """Return one Markdown list item per way: what it ran on, its KV cache and the reason."""
    items = []
    for way, result in results.items():
        if way == "pipeline":
            items.append(f"- {WAY_LABELS[way]}: {result['device_reason']}")
            continue
        items.append(
            f"- {WAY_LABELS[way]}: {result['description']}, with one KV cache of "
            f"{result['cache_positions']} positions ({result['cache_mb']:.0f} MB). "
            f"{result['device_reason']}"
        )
    return "\n".join(items)


def describe_noise(pipeline: dict[str, Any], prompts: Prompts) -> str:
    """Describe the spread of the pipeline's cold TTFTs, which all prefill the same prompt."""
    seconds = [run["ttft_seconds"] for run in pipeline["cold"]["runs"]]
    fastest = min(seconds)
    spread = (max(seconds) - fastest) / fastest if fastest else float("nan")
    return (
        f"As a measure of the noise, the pipeline's {len(seconds)} full prefills of the same "
        f"{prompts.long_tokens}-token prompt took {fastest:.2f} to {max(seconds):.2f} s in this "
        f"run, so the slowest took {spread:.0%} longer than the fastest."
    )


def describe_accepted_request(
    results: dict[str, dict[str, Any]], new_tokens: int, max_positions: int
) -> str:
    """Describe how much of the accepted request the Fast engine computed, and any overrun."""
    fast = results["engine-fast"]
    generated = fast["cold"]["new_tokens"]
    growth = fast["accepted"]["prompt_tokens"] - fast["cold"]["prompt_tokens"]
    computed = fast["accepted"]["prompt_tokens"] - fast["accepted"]["reused_tokens"]
    text = (
        "  The engine reads an accepted completion back as the tokens the model generated, as "
        "the app does, so the cache covers the whole prompt and the completion. In this run the "
        f"Fast engine's cold request generated {generated} tokens, and the next prompt was "
        f"{growth} tokens longer. The engine computed {computed:.0f} of that prompt's "
        f"{fast['accepted']['prompt_tokens']} tokens and took the others from its cache. The "
        "pipeline tokenizes the text afresh, so its prompt can be longer than the engine's."
    )
    pipeline_end = results["pipeline"]["accepted"]["prompt_tokens"] + new_tokens
    if pipeline_end > max_positions:
        text += (
            f"\n\n  NOTE: the pipeline's request after accepting needs {pipeline_end} positions, "
            f"more than the model's {max_positions}. transformers warns and goes on, and a "
            "position past the limit costs as much to compute as one before it, so the timing "
            "stays comparable. The engine has room for such a request because its sliding "
            "window lets it run past the model's positions."
        )
    return text


def render_report(
    machine: dict[str, str],
    model_dir: Path,
    command: str,
    prompts: Prompts,
    results: dict[str, dict[str, Any]],
    wall_seconds: float,
    new_tokens: int,
    repeats: int,
    max_positions: int,
) -> str:
    """Render the Markdown page with the machine, the command, the figures and the targets."""
    absolute = format_table(
        [
            "Way",
            "Device, dtype, threads",
            "Model ready (s)",
            "TTFT, 200 tokens (s)",
            "Cold TTFT, 900 tokens (s)",
            "TTFT after accepting (s)",
            "TTFT after edit (s)",
            "Decode (tokens/s)",
            "Peak RSS (MB)",
        ],
        absolute_rows(results),
    )
    prompt_table = format_table(
        [
            "Way",
            "200-token prompt",
            "Cold: prompt / new tokens",
            "After accepting: prompt / reused tokens",
            "After edit: prompt / reused tokens",
        ],
        prompt_rows(results),
    )
    ratios, fast = ratio_rows(results)
    ratio_table = format_table(
        [
            "Way",
            "Decode speedup",
            "TTFT after accepting",
            "TTFT after edit",
            "Cold TTFT",
            "Peak memory",
            "Model ready",
        ],
        ratios,
    )
    target_table = format_table(["Target", "Goal", "Engine, Fast", "Status"], target_rows(fast))
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    noise = describe_noise(results["pipeline"], prompts)
    accepted_note = describe_accepted_request(results, new_tokens, max_positions)
    model_description = describe_model(model_dir)
    runs = "one run" if repeats == 1 else f"the median of {repeats} runs"
    cold_runs = 2 * repeats
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""## Inference

Measured on {date} by `benchmarks/bench_inference.py`, in a run that took
{wall_seconds / 60:.1f} minutes.

### Command

```
{command}
```

### Machine

{machine_lines}

NOTE: the run shared this machine's {machine["Logical CPUs"]} logical CPUs with whatever else was
running, and a CI run may have been using them at the same time. Each figure is {runs}
of each request, except cold TTFT and decode, which are the median of {cold_runs} runs.
{noise}

### What was measured

{model_description}

Each way runs in its own Python process, so peak resident memory (`ru_maxrss`) is per way and
includes the Python interpreter, torch and transformers.

The engine ways make their requests as the app's inference thread does. They keep one KV cache
and the start of the previous prompt's window (the anchor) from one request to the next, call
`build_prompt(loaded, text, max_new_tokens, anchor)` and then
`stream_completion(..., cache=cache)`. Prompt tokens that match the cache are not computed again.
The pipeline computes every request from scratch.

Each repeat runs two sessions. A session starts with a new, empty cache and no anchor, and its
first request is the {prompts.long_tokens}-token prompt. In the first session the user accepts
the completion, and the next request is the prompt's text followed by the completion's text, as
the document contains it after the completion is inserted. In the second session the user rewrites
the last sentence instead of accepting, so the edited request follows the cold request directly.

- Model ready: from the start of loading until the model can generate. For the pipeline this is
  `transformers.pipeline(...)`. For the engine it is `load_and_place(folder, precision=...)`,
  which reads the weights in the chosen dtype and builds the engine. Both processes import
  transformers before the clock starts.
- TTFT, 200 tokens: time to first token for a {prompts.short_tokens}-token prompt. Each process
  runs it first, so it also absorbs one-off start-up costs of the first generation.
- Cold TTFT: time to first token for the {prompts.long_tokens}-token prompt with a new, empty
  KV cache, counted from the generation call, so it includes tokenization and the full prefill.
  The engine allocates the new cache before the clock starts, as the app allocates its cache
  when the model loads.
- TTFT after accepting: time to first token for the prompt plus the completion of the cold
  request. Each way appends its own completion, so the pipeline's and the engine's texts differ
  in those tokens. The table of prompts gives their lengths.
{accepted_note}
- TTFT after edit: time to first token for the {prompts.long_tokens}-token prompt with its last
  sentence replaced ({prompts.edited_tokens} tokens), the same text for every way.
- Decode: new tokens after the first, divided by the time from the first to the last new token,
  for the cold {prompts.long_tokens}-token requests ({new_tokens} new tokens requested).
- Peak RSS: the engine's figure includes its one KV cache. A new session frees the old cache
  before it allocates the new one.

Sampling: temperature {TEMPERATURE}, fixed seed. The pipeline call passes only `do_sample=True`,
`temperature` and `max_new_tokens`, so its other settings come from the model's generation
configuration and transformers' defaults. The engine turns off top-p, top-k and the repetition
penalty, and it never samples special tokens other than EOS.

Device choices:

{describe_ways(results)}

### Absolute figures

{absolute}

### Prompts and reused tokens

Prompt tokens are the tokens the model was given. Reused tokens are the prompt tokens whose keys
and values the engine took from its cache instead of computing them. The pipeline has no cache.

{prompt_table}

### Ratios against the float32 pipeline

Decode speedup is engine tokens/s divided by pipeline tokens/s (higher is better). The other
columns are engine figure divided by pipeline figure (lower is better). Each TTFT is divided by
the pipeline's TTFT for the same request.

{ratio_table}

### Targets

The targets apply to the Fast engine, against the float32 pipeline.

{target_table}
"""


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Compare the transformers pipeline with the kl3m-desk engine on one model "
        "folder and write a Markdown report."
    )
    parser.add_argument("model_dir", type=Path, nargs="?", help="model folder to measure")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown file to write (default: docs/benchmarks.md in the repository)",
    )
    parser.add_argument(
        "--new-tokens", type=int, default=64, help="new tokens per generation (default: 64)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each request per way; the report shows the median (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="sampling seed (default: 1234)")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child is None:
        if arguments.model_dir is None:
            parser.error("the model folder (MODEL_DIR) is missing")
        if not 1 <= arguments.new_tokens <= 1024 - LONG_PROMPT_TOKENS - 8:
            parser.error(
                f"--new-tokens must be from 1 to {1024 - LONG_PROMPT_TOKENS - 8}, so that the "
                f"{LONG_PROMPT_TOKENS}-token prompt and the edited one fit in 1,024 positions"
            )
        if arguments.repeats < 1:
            parser.error("--repeats must be at least 1")
    return arguments


def read_max_positions(model_dir: Path) -> int:
    """Return the model's max_position_embeddings, or exit when config.json is missing."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        sys.exit(f"{model_dir} is not a model folder: config.json is missing.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return int(config["max_position_embeddings"])


def main(argv: Sequence[str] | None = None) -> None:
    """Run every way in its own process and write the report."""
    arguments = parse_arguments(argv)
    if arguments.child is not None:
        child_main(arguments.child, arguments.spec, arguments.result)
        return

    started = time.perf_counter()
    model_dir = arguments.model_dir.expanduser().resolve()
    max_positions = read_max_positions(model_dir)
    prompts = build_prompts(model_dir)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kl3m-bench-") as work:
        spec_path = Path(work) / "spec.json"
        spec = {
            "model_dir": str(model_dir),
            "prompts": asdict(prompts),
            "new_tokens": arguments.new_tokens,
            "repeats": arguments.repeats,
            "seed": arguments.seed,
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        for way in WAYS:
            results[way], wall = run_child(way, spec_path, Path(work) / f"{way}.json")
            print(f"  done in {wall:.0f} s", file=sys.stderr, flush=True)

    command = " ".join(
        [
            "python benchmarks/bench_inference.py",
            str(arguments.model_dir),
            f"--output {arguments.output}",
            f"--new-tokens {arguments.new_tokens}",
            f"--repeats {arguments.repeats}",
            f"--seed {arguments.seed}",
        ]
    )
    report = render_report(
        describe_machine(),
        model_dir,
        command,
        prompts,
        results,
        time.perf_counter() - started,
        arguments.new_tokens,
        arguments.repeats,
        max_positions,
    )
    replace_section(arguments.output, REPORT_SECTION, report)
    print(report)


if __name__ == "__main__":
    main()
