"""The command line: `kl3m-desk generate` and the help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kl3m_desk.cli import build_generate_parser
from kl3m_desk.params import PARAMETERS
from tests.conftest import REPOSITORY


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kl3m_desk", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPOSITORY,
    )


def test_generate_streams_sequences(tiny_model_dir: Path) -> None:
    completed = run_cli(
        "generate",
        "--model",
        str(tiny_model_dir),
        "--temperature",
        "0.5",
        "--num-return-sequences",
        "3",
        "--max-new-tokens",
        "32",
        "--seed",
        "4",
        "This Agreement shall be governed by",
    )
    assert completed.returncode == 0, completed.stderr
    for index in (1, 2, 3):
        assert f"=== Sequence {index} of 3 ===" in completed.stdout
    assert completed.stderr.count("tokens/s") == 3
    assert "seed 4]" in completed.stderr
    assert "seed 6]" in completed.stderr


def test_generate_greedy_repeatable(tiny_model_dir: Path) -> None:
    arguments = (
        "generate",
        "--model",
        str(tiny_model_dir),
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
        "Notices. Any notice",
    )
    first = run_cli(*arguments)
    second = run_cli(*arguments)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.strip()


def test_generate_missing_model_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    completed = run_cli("generate", "--model", str(missing), "Text")
    assert completed.returncode == 2
    assert str(missing) in completed.stderr


def test_generate_invalid_option_named() -> None:
    completed = run_cli("generate", "--temperature", "hot", "Text")
    assert completed.returncode == 2
    assert "--temperature" in completed.stderr


def test_help_lists_units_and_defaults() -> None:
    text = build_generate_parser().format_help()
    for spec in PARAMETERS:
        assert spec.option in text
    help_by_option = {
        action.option_strings[0]: action.help or ""
        for action in build_generate_parser()._actions
        if action.option_strings
    }
    for spec in PARAMETERS:
        assert "default" in help_by_option[spec.option]
        assert spec.describe_range() in help_by_option[spec.option]
        if spec.unit:
            assert spec.unit in help_by_option[spec.option]


def test_generate_reports_clamped_values(tiny_model_dir: Path) -> None:
    completed = run_cli(
        "generate",
        "--model",
        str(tiny_model_dir),
        "--temperature",
        "3",
        "--top-p",
        "0",
        "--max-new-tokens",
        "1500",
        "--seed",
        "1",
        "Assignment.",
    )
    assert completed.returncode == 0, completed.stderr
    assert "--temperature 3.0 is outside 0.00 to 2.00; using 2.00." in completed.stderr
    assert "--top-p 0.0 is outside 0.01 to 1.00; using 0.01." in completed.stderr
    assert "--max-new-tokens 1500 does not fit the model's 1024 positions; using 1023." in (
        completed.stderr
    )
