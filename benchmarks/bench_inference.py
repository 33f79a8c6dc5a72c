"""Compare the model card's transformers pipeline with the kl3m-desk engine on one model folder.

Usage: python benchmarks/bench_inference.py MODEL_DIR [--output docs/benchmarks.md]
       [--new-tokens 64] [--repeats 1] [--seed 1234]

Each way of running the model runs in its own subprocess, so that peak resident memory is measured
per way:
- pipeline: `transformers.pipeline("text-generation", ...)` on the CPU in float32, as the
  kl3m-002-520m model card shows it.
- engine (auto): `load_model`, then `select_and_verify` with the detected hardware (the app's
  automatic device and precision), then `build_prompt` and `stream_completion`.
- engine (exact): `load_model` without `select_and_verify`, so CPU float32.

The prompts are the legal clause fixtures (`fixtures/legal/*.txt` in the shared folder beside the
repository, or in $KL3M_DESK_SHARED), joined, repeated as needed and cut to exactly 900 and 200
tokens with the model's tokenizer. The "edited" prompt is the 900-token prompt with its last
sentence replaced. Results go to a Markdown page (default docs/benchmarks.md).
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPOSITORY.parent / "shared"
SHARED_ENV = "KL3M_DESK_SHARED"
DEFAULT_OUTPUT = REPOSITORY / "docs" / "benchmarks.md"

LONG_PROMPT_TOKENS = 900
SHORT_PROMPT_TOKENS = 200
TEMPERATURE = 0.5
CHILD_TIMEOUT_SECONDS = 900
EDITED_SENTENCE = (
    " This Agreement shall be governed by the laws of the State of Delaware, without regard to "
    "its conflict of laws rules."
)

WAYS = ("pipeline", "engine-auto", "engine-exact")
WAY_LABELS = {
    "pipeline": "transformers pipeline, CPU float32 (baseline)",
    "engine-auto": "kl3m-desk engine, automatic device and dtype",
    "engine-exact": "kl3m-desk engine, exact mode (CPU float32)",
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
    """Return the median TTFT and decode speed over repeated runs of one prompt."""
    return {
        "prompt_tokens": runs[0].prompt_tokens,
        "ttft_seconds": statistics.median(run.ttft_seconds for run in runs),
        "new_tokens": runs[0].new_tokens,
        "decode_tokens_per_second": statistics.median(run.decode_tokens_per_second for run in runs),
        "runs": [asdict(run) for run in runs],
    }


def run_pipeline(
    model_dir: Path, prompts: Prompts, new_tokens: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Measure the model card's pipeline: load, then generate from each prompt `repeats` times."""
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    transformers.utils.logging.disable_progress_bar()

    class TimingStreamer(BaseStreamer):  # type: ignore[misc]
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

    def generate(text: str) -> RunTiming:
        transformers.set_seed(seed)
        streamer = TimingStreamer()
        call_started = time.perf_counter()
        generator(
            text,
            do_sample=True,
            temperature=TEMPERATURE,
            max_new_tokens=new_tokens,
            streamer=streamer,
            return_full_text=False,
        )
        return timing_from_token_times(streamer.prompt_tokens, call_started, streamer.token_times)

    return measure_prompts(generate, prompts, repeats) | {
        "ready_seconds": ready_seconds,
        "device": "cpu",
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "device_reason": "transformers pipeline with dtype=torch.float32, device='cpu'.",
    }


def run_engine(
    model_dir: Path, prompts: Prompts, new_tokens: int, repeats: int, seed: int, auto: bool
) -> dict[str, Any]:
    """Measure the kl3m-desk engine, with the app's automatic device choice when `auto` is True."""
    import torch
    import transformers  # noqa: F401  (imported before the clock starts, as for the pipeline)

    from kl3m_desk.device import detect_hardware, select_and_verify
    from kl3m_desk.generation import build_prompt, stream_completion
    from kl3m_desk.model import load_model
    from kl3m_desk.params import SamplingParams

    started = time.perf_counter()
    loaded = load_model(model_dir)
    reason = loaded.device_reason
    if auto:
        loaded, choice = select_and_verify(loaded, detect_hardware())
        reason = choice.reason
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

    def generate(text: str) -> RunTiming:
        call_started = time.perf_counter()
        prompt = build_prompt(loaded, text, new_tokens)
        result = stream_completion(loaded, prompt, params, lambda piece: None)
        elapsed = time.perf_counter() - call_started
        # TTFT counts tokenization, as the pipeline's does: everything except the decode time.
        return RunTiming(
            prompt_tokens=prompt.used,
            ttft_seconds=elapsed - result.decode_seconds,
            new_tokens=len(result.token_ids),
            decode_tokens_per_second=result.tokens_per_second,
        )

    return measure_prompts(generate, prompts, repeats) | {
        "ready_seconds": ready_seconds,
        "device": loaded.device.type,
        "dtype": loaded.dtype_name,
        "threads": torch.get_num_threads(),
        "device_reason": reason,
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


def measure_prompts(generate: Any, prompts: Prompts, repeats: int) -> dict[str, Any]:
    """Run the short prompt (which also warms up the process), the long one and the edited one."""
    short = [generate(prompts.short) for _ in range(repeats)]
    long = [generate(prompts.long) for _ in range(repeats)]
    edited = [generate(prompts.edited) for _ in range(repeats)]
    return {
        "short": median_timing(short),
        "long": median_timing(long),
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
        result = run_engine(*arguments, auto=(way == "engine-auto"))
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
        "this size, but the automatic engine's parity check compares random logits, so its "
        "outcome with trained weights can differ."
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
                f"{result['long']['prompt_tokens']} / {result['long']['new_tokens']}",
                f"{result['ready_seconds']:.2f}",
                f"{result['long']['ttft_seconds']:.2f}",
                f"{result['edited']['ttft_seconds']:.2f}",
                f"{result['short']['ttft_seconds']:.2f}",
                f"{result['long']['decode_tokens_per_second']:.1f}",
                f"{result['peak_rss_mb']:.0f}",
            ]
        )
    return rows


def ratio_rows(results: dict[str, dict[str, Any]]) -> tuple[list[list[str]], dict[str, float]]:
    """Return ratio rows for each engine way against the pipeline, and the auto engine's ratios."""
    base = results["pipeline"]
    rows = []
    auto: dict[str, float] = {}
    for way in ("engine-auto", "engine-exact"):
        result = results[way]
        figures = {
            "decode": ratio(
                result["long"]["decode_tokens_per_second"],
                base["long"]["decode_tokens_per_second"],
            ),
            "edit": ratio(result["edited"]["ttft_seconds"], base["edited"]["ttft_seconds"]),
            "cold": ratio(result["long"]["ttft_seconds"], base["long"]["ttft_seconds"]),
            "memory": ratio(result["peak_rss_mb"], base["peak_rss_mb"]),
            "ready": ratio(result["ready_seconds"], base["ready_seconds"]),
        }
        if way == "engine-auto":
            auto = figures
        rows.append(
            [
                WAY_LABELS[way],
                f"{figures['decode']:.2f}x",
                f"{figures['edit']:.2f}x",
                f"{figures['cold']:.2f}x",
                f"{figures['memory']:.2f}x",
                f"{figures['ready']:.2f}x",
            ]
        )
    return rows, auto


def target_rows(auto: dict[str, float]) -> list[list[str]]:
    """Compare the automatic engine's ratios with the project's targets."""
    targets = [
        ("Decode speedup", "decode", ">= 8x", auto["decode"] >= 8.0),
        ("TTFT after an edit of the last sentence", "edit", "<= 0.05x", auto["edit"] <= 0.05),
        ("Cold TTFT, 900-token prompt", "cold", "<= 0.5x", auto["cold"] <= 0.5),
        ("Peak memory", "memory", "<= 0.5x", auto["memory"] <= 0.5),
        ("Model-ready time", "ready", "<= 1.0x", auto["ready"] <= 1.0),
    ]
    return [
        [name, target, f"{auto[key]:.2f}x", "met" if met else "not met"]
        for name, key, target, met in targets
    ]


def render_report(
    machine: dict[str, str],
    model_dir: Path,
    command: str,
    prompts: Prompts,
    results: dict[str, dict[str, Any]],
    wall_seconds: float,
    new_tokens: int,
    repeats: int,
) -> str:
    """Render the Markdown page with the machine, the command, the figures and the targets."""
    absolute = format_table(
        [
            "Way",
            "Device, dtype, threads",
            "Prompt / new tokens",
            "Model ready (s)",
            "Cold TTFT, 900 tokens (s)",
            "TTFT after edit (s)",
            "TTFT, 200 tokens (s)",
            "Decode (tokens/s)",
            "Peak RSS (MB)",
        ],
        absolute_rows(results),
    )
    ratios, auto = ratio_rows(results)
    ratio_table = format_table(
        [
            "Way",
            "Decode speedup",
            "TTFT after edit",
            "Cold TTFT",
            "Peak memory",
            "Model ready",
        ],
        ratios,
    )
    target_table = format_table(["Target", "Goal", "Engine (auto)", "Status"], target_rows(auto))
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    reasons = "\n".join(
        f"- {WAY_LABELS[way]}: {result['device_reason']}" for way, result in results.items()
    )
    pipeline = results["pipeline"]
    prefill_spread = (
        abs(pipeline["edited"]["ttft_seconds"] - pipeline["long"]["ttft_seconds"])
        / (pipeline["long"]["ttft_seconds"])
    )
    model_description = describe_model(model_dir)
    runs = "one run" if repeats == 1 else f"the median of {repeats} runs"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Inference benchmarks

Measured on {date} by `benchmarks/bench_inference.py`, in a run that took
{wall_seconds / 60:.1f} minutes.

## Command

```
{command}
```

## Machine

{machine_lines}

NOTE: the run shared this machine's {machine["Logical CPUs"]} logical CPUs with whatever else was
running, and a CI run may have been using them at the same time. Each figure is {runs}
of each prompt. As a measure of the noise, the pipeline's two full prefills of nearly equal
prompts ({prompts.long_tokens} and {prompts.edited_tokens} tokens) differed by
{prefill_spread:.0%} in this run.

## What was measured

{model_description}

Each way runs in its own Python process, so peak resident memory (`ru_maxrss`) is per way and
includes the Python interpreter, torch and transformers.

- Model ready: from the start of loading until the model can generate. For the pipeline this is
  `transformers.pipeline(...)`; for the engine it is `load_model` plus, in automatic mode,
  `select_and_verify` (conversion to the chosen dtype and the parity check against float32).
- Cold TTFT: time to first token for a {prompts.long_tokens}-token prompt with a new KV
  cache, counted from the generation call, so it includes tokenization and the full prefill.
- TTFT after edit: the same prompt with its last sentence replaced
  ({prompts.edited_tokens} tokens). Neither the pipeline nor the engine reuses the KV cache of
  the earlier prompt, so this is a second full prefill. It equals the cold figure up to noise
  and the difference in prompt length.
- TTFT, 200 tokens: a {prompts.short_tokens}-token prompt. Each process runs it first, so
  it also absorbs one-off start-up costs of the first generation.
- Decode: new tokens after the first, divided by the time from the first to the last new token,
  for the {prompts.long_tokens}-token prompt ({new_tokens} new tokens requested). The "Prompt /
  new tokens" column gives the tokens the model saw and generated for that prompt.
- Peak RSS: in automatic mode, `select_and_verify` keeps the float32 model while it converts a
  copy and checks it, so both sets of weights exist at the peak.

Sampling: temperature {TEMPERATURE}, fixed seed. The pipeline call passes only `do_sample=True`,
`temperature` and `max_new_tokens`, so its other settings come from the model's generation
configuration and transformers' defaults. The engine turns off top-p, top-k and the repetition
penalty, and it never samples special tokens other than EOS.

Device choices:

{reasons}

## Absolute figures

{absolute}

## Ratios against the float32 pipeline

Decode speedup is engine tokens/s divided by pipeline tokens/s (higher is better). The other
columns are engine figure divided by pipeline figure (lower is better). TTFT after edit is
divided by the pipeline's TTFT after the same edit.

{ratio_table}

## Targets

The targets apply to the engine in automatic mode, against the float32 pipeline.

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
        help="runs of each prompt per way; the report shows the median (default: 1)",
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


def main(argv: Sequence[str] | None = None) -> None:
    """Run every way in its own process and write the report."""
    arguments = parse_arguments(argv)
    if arguments.child is not None:
        child_main(arguments.child, arguments.spec, arguments.result)
        return

    started = time.perf_counter()
    model_dir = arguments.model_dir.expanduser().resolve()
    if not (model_dir / "config.json").is_file():
        sys.exit(f"{model_dir} is not a model folder: config.json is missing.")
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
    )
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
