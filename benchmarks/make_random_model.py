"""Write a random-weight stand-in for kl3m-002-520m: the real architecture and size, no training.

Usage: python benchmarks/make_random_model.py OUTPUT_DIR [--tokenizer DIR] [--seed N] [--dtype D]

Benchmarks and screenshots need a model with kl3m-002-520m's exact shape (Mixtral, 4 experts with 2
active per token, 520,193,024 parameters) when the published weights are not at hand. The folder
this script writes contains config.json, model.safetensors, generation_config.json and the
kl3m-001-32k tokenizer files, and it does the same computation per token as the real model. Load
time, memory use and tokens/s are therefore those of a model of the real size, but the generated
text is meaningless.

The same seed and dtype give the same weights with the same torch version.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import MixtralConfig, PreTrainedModel

log = logging.getLogger("make_random_model")

REPOSITORY = Path(__file__).resolve().parent.parent
SHARED_VARIABLE = "KL3M_DESK_SHARED"
TOKENIZER_FOLDER_NAME = "kl3m-001-32k"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

EXPECTED_PARAMETERS = 520_193_024
VOCAB_SIZE = 32768
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

README_TEMPLATE = """\
# kl3m-002-520m-random: a random-weight stand-in, not the real model

This folder is NOT kl3m-002-520m. It has kl3m-002-520m's architecture and size (Mixtral, 4 experts
with 2 active per token, {parameters:,} parameters) but random weights, so everything it generates
is meaningless. Use it only to measure load time, memory use and generation speed, or to take
screenshots of the interface.

- Weights: normal(0, {std}) per tensor, RMSNorm weights 1.0, torch seed {seed}, stored as {dtype}.
- Tokenizer files copied unchanged from the folder `{tokenizer_name}`:
  {tokenizer_files}.
  They keep their own license (kl3m-001-32k: CC BY 4.0, ALEA Institute).
- Written by `benchmarks/make_random_model.py` from the kl3m-desk repository with transformers
  {transformers_version} and torch {torch_version}.
"""


def default_tokenizer_dir() -> Path:
    """Return the default tokenizer folder: kl3m-001-32k in the shared folder beside the repository.

    The environment variable KL3M_DESK_SHARED replaces the shared folder's location.
    """
    shared = os.environ.get(SHARED_VARIABLE)
    shared_dir = Path(shared) if shared else REPOSITORY.parent / "shared"
    return shared_dir / TOKENIZER_FOLDER_NAME


def kl3m_520m_config() -> MixtralConfig:
    """Return kl3m-002-520m's configuration.

    The shape (experts, sizes, layers, heads, 1,024 positions, sliding window 256, 32,768 ids) is
    the one stated on the model card of alea-institute/kl3m-002-520m on Hugging Face. The special
    token ids are those of the kl3m-001-32k tokenizer. Untied input and output embeddings are what
    make the count 520,193,024.
    NOTE: the published config.json itself was not found, so every other field (rope theta 1e6,
    rms_norm_eps 1e-5, initializer_range 0.02, ...) is the default of transformers 5.25's
    MixtralConfig. None of those fields changes the parameter count.
    """
    from kl3m_desk.tiny_model import kl3m_config

    config: MixtralConfig = kl3m_config(vocab_size=VOCAB_SIZE)
    return config


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        description="Write a model folder with kl3m-002-520m's exact configuration and random "
        "weights, for benchmarks and screenshots. Its output text is meaningless.",
    )
    parser.add_argument(
        "output_dir",
        type=Path,
        metavar="OUTPUT_DIR",
        help="folder to create; it must not exist yet or must be empty",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with the kl3m-001-32k tokenizer files (tokenizer.json, "
        "tokenizer_config.json, special_tokens_map.json); default "
        f"{default_tokenizer_dir()}, or kl3m-001-32k inside ${SHARED_VARIABLE}",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the torch random generator that draws the weights; default 0",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="data type of the saved weights; default float32, the type kl3m-desk runs in",
    )
    return parser


def validate_arguments(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Path:
    """Check the output and tokenizer folders, and return the tokenizer folder.

    Exits through `parser.error` with a message that names the path at fault.
    """
    output_dir: Path = options.output_dir
    if output_dir.exists() and not output_dir.is_dir():
        parser.error(f"the output path {output_dir} is a file. Choose a new folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        parser.error(
            f"the output folder {output_dir} already exists and is not empty. Choose a "
            "new folder or delete this one first."
        )

    tokenizer_dir: Path = options.tokenizer or default_tokenizer_dir()
    what_to_do = (
        f"Pass --tokenizer DIR with the {TOKENIZER_FOLDER_NAME} tokenizer files, or set "
        f"{SHARED_VARIABLE} to the folder that contains {TOKENIZER_FOLDER_NAME}."
    )
    if not tokenizer_dir.is_dir():
        parser.error(f"the tokenizer folder {tokenizer_dir} was not found. {what_to_do}")
    if not (tokenizer_dir / "tokenizer.json").is_file():
        parser.error(f"the tokenizer folder {tokenizer_dir} has no tokenizer.json. {what_to_do}")
    return tokenizer_dir


def check_tokenizer_vocabulary(tokenizer_dir: Path, vocab_size: int) -> None:
    """Raise SystemExit if the tokenizer has ids that the model's embedding table cannot hold."""
    from tokenizers import Tokenizer

    tokenizer_size = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size(
        with_added_tokens=True
    )
    if tokenizer_size > vocab_size:
        raise SystemExit(
            f"The tokenizer in {tokenizer_dir} has {tokenizer_size:,} ids, more than "
            f"the model's vocab_size of {vocab_size:,}. Pass the "
            f"{TOKENIZER_FOLDER_NAME} tokenizer with --tokenizer."
        )


def build_random_model(seed: int, dtype: torch.dtype) -> PreTrainedModel:
    """Build kl3m-002-520m's architecture with seeded random weights.

    The model is built on the meta device, so transformers' own initialisation costs nothing, and
    every parameter is then drawn once from one seeded generator. `to_empty` leaves the rotary
    embedding buffers uninitialised, so the returned model must only be saved, never run. The
    buffers are non-persistent and `save_random_model` checks that none of them is written.
    """
    from transformers import MixtralForCausalLM

    config = kl3m_520m_config()
    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    model.to_empty(device="cpu")

    generator = torch.Generator().manual_seed(seed)
    std = config.initializer_range
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # RMSNorm weights start at 1.0, as in a freshly initialised model.
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(mean=0.0, std=std, generator=generator)
    # transformers wraps `to` in a decorator that hides its signature, so mypy reports an error.
    return model.to(dtype=dtype)  # type: ignore[call-arg]


def count_parameters(model: torch.nn.Module) -> int:
    """Return the number of parameter elements, each shared tensor counted once."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_saved_parameters(folder: Path) -> int:
    """Return the number of elements in all safetensors files of `folder`, read from the headers."""
    from safetensors import safe_open

    total = 0
    for weight_file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(weight_file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                total += math.prod(handle.get_slice(name).get_shape())
    return total


def save_random_model(model: PreTrainedModel, folder: Path) -> None:
    """Save `model` as safetensors into `folder` and check what was written.

    Raises SystemExit if a pickle checkpoint (.bin) appears, no safetensors file is written, or the
    saved parameter count differs from EXPECTED_PARAMETERS.
    """
    parameter_names = {name for name, _ in model.named_parameters()}
    unexpected = sorted(set(model.state_dict()) - parameter_names)
    if unexpected:
        raise SystemExit(
            f"The model would save tensors that were not filled with random values: "
            f"{', '.join(unexpected)}. Initialise them in build_random_model."
        )

    import transformers

    transformers.utils.logging.disable_progress_bar()
    # transformers 5 always writes safetensors. Its save_pretrained no longer has the
    # safe_serialization parameter and would silently ignore it, so the checks below enforce it.
    model.save_pretrained(folder)

    pickles = sorted(path.name for path in folder.glob("*.bin"))
    if pickles:
        raise SystemExit(
            f"save_pretrained wrote pickle weights ({', '.join(pickles)}) to {folder}. "
            "kl3m-desk loads safetensors only."
        )
    if not any(folder.glob("*.safetensors")):
        raise SystemExit(f"save_pretrained wrote no .safetensors file to {folder}.")

    saved = count_saved_parameters(folder)
    if saved != EXPECTED_PARAMETERS:
        raise SystemExit(
            f"The saved weights in {folder} hold {saved:,} parameters, not {EXPECTED_PARAMETERS:,}."
        )


def copy_tokenizer_files(tokenizer_dir: Path, folder: Path) -> list[str]:
    """Copy the TOKENIZER_FILES present in `tokenizer_dir` to `folder` and return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        source = tokenizer_dir / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
            copied.append(name)
    return copied


def write_readme(
    folder: Path,
    seed: int,
    std: float,
    dtype_name: str,
    tokenizer_dir: Path,
    tokenizer_files: Sequence[str],
) -> None:
    """Write README.md, which states that the folder is a random stand-in, not the real model."""
    import transformers

    text = README_TEMPLATE.format(
        parameters=EXPECTED_PARAMETERS,
        std=std,
        seed=seed,
        dtype=dtype_name,
        tokenizer_files=", ".join(tokenizer_files),
        tokenizer_name=tokenizer_dir.name,
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
    )
    (folder / "README.md").write_text(text, encoding="utf-8")


def apply_umask(folder: Path) -> None:
    """Give `folder` and its files the permissions of a newly created folder and files.

    mkdtemp creates the folder readable by its owner only, and save_pretrained writes
    model.safetensors the same way.
    """
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def write_model_folder(output_dir: Path, tokenizer_dir: Path, seed: int, dtype_name: str) -> None:
    """Write the complete model folder, first into a temporary sibling folder, then rename it.

    A run that fails leaves no half-written OUTPUT_DIR behind.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent)
    )
    try:
        log.info("Building the model with seed %d", seed)
        model = build_random_model(seed, DTYPES[dtype_name])
        parameters = count_parameters(model)
        log.info("Parameter count: %s", f"{parameters:,}")
        if parameters != EXPECTED_PARAMETERS:
            raise SystemExit(
                f"The model has {parameters:,} parameters, not "
                f"{EXPECTED_PARAMETERS:,}; kl3m_520m_config does not match "
                "kl3m-002-520m."
            )

        log.info("Saving %s weights", dtype_name)
        save_random_model(model, staging_dir)
        std = model.config.initializer_range
        del model

        tokenizer_files = copy_tokenizer_files(tokenizer_dir, staging_dir)
        write_readme(staging_dir, seed, std, dtype_name, tokenizer_dir, tokenizer_files)

        apply_umask(staging_dir)
        if output_dir.exists():
            output_dir.rmdir()  # validate_arguments allowed only an empty folder
        staging_dir.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    options = parser.parse_args(argv)
    tokenizer_dir = validate_arguments(parser, options)
    check_tokenizer_vocabulary(tokenizer_dir, VOCAB_SIZE)

    started = time.perf_counter()
    write_model_folder(options.output_dir, tokenizer_dir, options.seed, options.dtype)

    for path in sorted(options.output_dir.iterdir()):
        log.info("  %-26s %15s bytes", path.name, f"{path.stat().st_size:,}")
    log.info("Wrote %s in %.1f s", options.output_dir, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
