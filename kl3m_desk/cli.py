"""Command line: `kl3m-desk [--model DIR] [FILE]` opens the window; `kl3m-desk generate` streams a
completion to standard output with the same engine and no Qt."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from kl3m_desk import APP_NAME, __version__
from kl3m_desk.logging_setup import configure_logging, log_startup
from kl3m_desk.params import PARAMETERS, STOP_AT, ParameterSpec, SamplingParams

if TYPE_CHECKING:
    from kl3m_desk.model import LoadedModel

log = logging.getLogger(__name__)

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _option_help(spec: ParameterSpec) -> str:
    unit = f" {spec.unit}" if spec.unit else ""
    default = (
        "blank: a new random seed" if spec.default is None else spec.format_value(spec.default)
    )
    return f"{spec.help} Range {spec.describe_range()}{unit}; default {default}."


def build_gui_parser() -> argparse.ArgumentParser:
    """Return the parser of the windowed command."""
    parser = argparse.ArgumentParser(
        prog=APP_NAME,
        description="Offline drafting editor: a legal language model continues your document at "
        "the cursor. Run `kl3m-desk generate --help` for the command-line generator.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model folder to load (default: the last folder used)",
    )
    parser.add_argument(
        "--generate",
        action="store_true",
        help="once the model has loaded, continue FILE (or the empty document) at its end, as "
        "Draft → Generate does",
    )
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check this installation offscreen with the network blocked: load the bundled model "
        "(or --model DIR, or a tiny random one), stream a few tokens, save and reopen a document, "
        "then exit with status 0 on success",
    )
    parser.add_argument(
        "--self-test-report",
        type=Path,
        metavar="PATH",
        help="JSON file for the self-test report (default: kl3m-desk-self-test.json in the "
        "current folder)",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        metavar="FILE",
        help="document to open: .docx, .txt or .md (text files in any common encoding)",
    )
    return parser


def build_generate_parser() -> argparse.ArgumentParser:
    """Return the parser of `kl3m-desk generate`, with one option per sampling parameter."""
    parser = argparse.ArgumentParser(
        prog=f"{APP_NAME} generate",
        description="Continue PROMPT with the model and stream the completion to standard output. "
        "Timing and the seed of each sequence go to standard error.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model folder to load (default: the last folder used in the window)",
    )
    for spec in PARAMETERS:
        parser.add_argument(
            spec.option,
            dest=spec.name,
            type=int if spec.kind == "int" else float,
            default=spec.default,
            metavar=spec.metavar,
            help=_option_help(spec),
        )
    parser.add_argument(
        STOP_AT.option,
        dest=STOP_AT.name,
        choices=STOP_AT.values,
        default=STOP_AT.default,
        help=f"{STOP_AT.help} The space or line break after the cut is not printed; default "
        f"{STOP_AT.default}.",
    )
    parser.add_argument(
        "--num-return-sequences",
        type=int,
        default=1,
        metavar="N",
        help="number of completions to generate one after another, each printed "
        "under a header; with --seed S they use seeds S, S+1, ...; default 1. The prompt is "
        "computed once for all of them.",
    )
    parser.add_argument(
        "--precision",
        choices=("fast", "exact"),
        help="fast: the quickest computation this machine offers (bfloat16 where the processor "
        "has it); exact: float32, the reference. Default: the choice made in the window, "
        "fast until then.",
    )
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level to standard error")
    parser.add_argument(
        "prompt",
        metavar="PROMPT",
        help='text to continue; "-" reads it from standard input; "" starts an empty document',
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["generate"]:
        return run_generate(arguments[1:])

    options = build_gui_parser().parse_args(arguments)
    if options.self_test:
        from kl3m_desk.ui.selftest import run_self_test

        return run_self_test(options.self_test_report, options.model)

    log_path = configure_logging(debug=options.debug, console=options.debug)
    log_startup()
    from kl3m_desk.ui.app import run_gui  # Qt is imported only for the window

    return run_gui(options.model, options.file, log_path, generate=options.generate)


def notice(message: str) -> None:
    """Print a notice about the run to standard error, where it stays apart from the text."""
    print(f"{APP_NAME}: {message}", file=sys.stderr)


def parse_sampling(parser: argparse.ArgumentParser, options: argparse.Namespace) -> SamplingParams:
    """Validate the sampling options, telling the user about every value pulled into range."""
    raw = {spec.name: getattr(options, spec.name) for spec in PARAMETERS}
    raw[STOP_AT.name] = getattr(options, STOP_AT.name)
    try:
        params = SamplingParams.from_mapping(raw)
    except ValueError as error:
        parser.error(str(error))
    for spec in PARAMETERS:
        given, used = raw[spec.name], getattr(params, spec.name)
        if given is not None and used != given:
            notice(
                f"{spec.option} {given} is outside {spec.describe_range()}; "
                f"using {spec.format_value(used)}."
            )
    return params


def run_generate(arguments: Sequence[str]) -> int:
    """Run `kl3m-desk generate`; see `build_generate_parser`."""
    parser = build_generate_parser()
    options = parser.parse_args(arguments)
    configure_logging(debug=options.debug, console=options.debug)
    log_startup()
    params = parse_sampling(parser, options)
    if options.num_return_sequences < 1:
        parser.error(
            f"--num-return-sequences must be 1 or more, not {options.num_return_sequences}."
        )
    prompt_text = sys.stdin.read() if options.prompt == "-" else options.prompt

    from kl3m_desk.device import load_and_place
    from kl3m_desk.model import ModelLoadError
    from kl3m_desk.settings import Settings

    settings = Settings.load()
    folder = options.model or settings.last_model_dir
    if folder is None:
        parser.error("no model folder: pass --model DIR.")
    try:
        loaded = load_and_place(folder, settings.device, options.precision or settings.precision)
    except ModelLoadError as error:
        notice(str(error))
        return EXIT_ERROR
    if params.max_new_tokens > loaded.max_positions - 1:
        notice(
            f"--max-new-tokens {params.max_new_tokens} does not fit the model's "
            f"{loaded.max_positions} positions; using {loaded.max_positions - 1}."
        )
    return stream_sequences(loaded, prompt_text, params, options.num_return_sequences)


def stream_sequences(loaded: LoadedModel, text: str, params: SamplingParams, count: int) -> int:
    """Stream `count` completions of `text` to standard output; returns the exit status.

    Ctrl+C stops the current completion and ends the run with status 130.
    """
    from kl3m_desk.generation import build_prompt, stream_completion

    cancel = threading.Event()

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        cancel.set()

    previous_handler = signal.signal(signal.SIGINT, interrupt)
    cache = loaded.engine.new_cache()  # holds the prompt, so later sequences skip computing it
    print(f"[{loaded.describe()}]", file=sys.stderr)
    try:
        prompt = build_prompt(loaded, text, params.max_new_tokens)
        if prompt.dropped_characters:
            notice(
                f"the earliest {prompt.dropped_characters:,} characters of the prompt did not fit "
                f"the {prompt.available}-token window and were dropped."
            )
        for index in range(count):
            if count > 1:
                separator = "\n" if index else ""
                print(f"{separator}=== Sequence {index + 1} of {count} ===", flush=True)
            seed = None if params.seed is None else (params.seed + index) % 2**32
            result = stream_completion(
                loaded,
                prompt,
                params.replace(seed=seed),
                lambda piece: print(piece, end="", flush=True),
                cancel,
                cache,
            )
            print(flush=True)
            label = f"sequence {index + 1}: " if count > 1 else ""
            print(
                f"[{label}{len(result.token_ids)} tokens, {result.tokens_per_second:.1f} tokens/s, "
                f"stop: {result.stop_reason}, seed {result.seed}]",
                file=sys.stderr,
            )
            if cancel.is_set():
                return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    return 0
