"""Build the frozen kl3m-desk app with PyInstaller, optionally with a bundled model.

    python packaging/build.py [--model DIR | --tiny-model] [--self-test] [--tarball]

With --model, the model folder's safetensors weights are converted to bfloat16 (about half the
size of float32), copied with its config and tokenizer files into build/bundle-model, and given a
checksum manifest that the app verifies before first use. The build prints the size of the bundle
by part. --self-test runs the frozen app's `--self-test` and fails the build when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "kl3m-desk.spec"
BUILD = ROOT / "build"
DIST = ROOT / "dist"
APP_NAME = "kl3m-desk"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
    "LICENSE",
)
# The Linux bundle without a model must stay below this size, in MB (10**6 bytes).
MAX_APP_MB = 1000


def prepare_model(source: Path, target: Path) -> Path:
    """Copy `source` to `target` with bfloat16 safetensors weights and a checksum manifest."""
    import torch
    from safetensors.torch import load_file, save_file

    from kl3m_desk.manifest import write_manifest
    from kl3m_desk.model import inspect_model_folder

    folder = inspect_model_folder(source)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shutil.copyfile(index, target / index.name)
    for weight_file in folder.weight_files:
        tensors = load_file(str(weight_file))
        converted = {
            name: tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
            for name, tensor in tensors.items()
        }
        save_file(converted, str(target / weight_file.name), metadata={"format": "pt"})
        print(f"Converted {weight_file.name} to bfloat16")
    write_manifest(target, name=source.resolve().name)
    return target


def run_pyinstaller(bundle_model: Path | None) -> Path:
    """Run PyInstaller on the spec and return the onedir folder."""
    environment = dict(os.environ)
    environment.pop("KL3M_DESK_BUNDLE_MODEL", None)
    if bundle_model is not None:
        environment["KL3M_DESK_BUNDLE_MODEL"] = str(bundle_model)
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(SPEC),
        "--noconfirm",
        "--clean",
        "--distpath",
        str(DIST),
        "--workpath",
        str(BUILD / "pyinstaller"),
    ]
    print("Running", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env=environment)
    return DIST / APP_NAME


def part_of(relative: Path) -> str:
    """Return the bundle part that a file belongs to."""
    parts = relative.parts
    top = parts[1] if parts[0] == "_internal" and len(parts) > 1 else parts[0]
    name = relative.name
    if top == "model":
        return "model"
    if top in ("torch", "functorch", "torchgen") or name.startswith(("libtorch", "libc10")):
        return "torch"
    if top in ("PySide6", "shiboken6") or name.startswith(("libQt6", "libpyside6", "libshiboken")):
        return "Qt"
    if top in ("transformers", "tokenizers", "safetensors", "huggingface_hub"):
        return "transformers"
    return "other"


def measure(app_dir: Path) -> dict[str, int]:
    """Return the bytes of the bundle by part."""
    sizes: dict[str, int] = defaultdict(int)
    for path in app_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            sizes[part_of(path.relative_to(app_dir))] += path.stat().st_size
    return dict(sizes)


def print_sizes(sizes: dict[str, int]) -> int:
    """Print the size table and return the size without the model, in bytes."""
    print("Bundle size by part:")
    for part in ("torch", "Qt", "transformers", "model", "other"):
        print(f"  {part:<13}{sizes.get(part, 0) / 1e6:>10.1f} MB")
    total = sum(sizes.values())
    without_model = total - sizes.get("model", 0)
    print(f"  {'total':<13}{total / 1e6:>10.1f} MB")
    print(f"  {'app only':<13}{without_model / 1e6:>10.1f} MB (limit {MAX_APP_MB} MB on Linux)")
    return without_model


def run_self_test(app_dir: Path) -> dict[str, object]:
    """Run the frozen app's self-test and return its report."""
    executable = app_dir / (APP_NAME + (".exe" if sys.platform == "win32" else ""))
    report_path = BUILD / "self-test.json"
    report_path.unlink(missing_ok=True)
    completed = subprocess.run(
        [str(executable), "--self-test", "--self-test-report", str(report_path)],
        check=False,
        timeout=900,
    )
    if not report_path.is_file():
        raise SystemExit(f"The self-test wrote no report (exit status {completed.returncode}).")
    report: dict[str, object] = json.loads(report_path.read_text(encoding="utf-8"))
    if completed.returncode != 0 or not report.get("ok"):
        raise SystemExit(
            f"The self-test failed (exit status {completed.returncode}):\n"
            + json.dumps(report, indent=2)
        )
    print(f"Self-test passed: {report_path}")
    return report


def make_tarball(app_dir: Path) -> Path:
    """Pack the onedir build as dist/kl3m-desk-VERSION-linux-ARCH.tar.gz."""
    from kl3m_desk import __version__

    archive = DIST / f"{APP_NAME}-{__version__}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(app_dir, arcname=f"{APP_NAME}-{__version__}")
    print(f"Wrote {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model folder to bundle (safetensors); default: no model",
    )
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="bundle a tiny random model with the kl3m-001-32k tokenizer from "
        "--tokenizer, for CI and release checks",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        metavar="DIR",
        default=ROOT.parent / "shared" / "kl3m-001-32k",
        help="kl3m-001-32k tokenizer folder for --tiny-model (default: %(default)s)",
    )
    parser.add_argument(
        "--self-test", action="store_true", help="run the frozen app's --self-test after the build"
    )
    parser.add_argument(
        "--tarball", action="store_true", help="pack the Linux onedir build as a .tar.gz in dist/"
    )
    options = parser.parse_args()

    bundle_model = None
    source_model = options.model
    if options.tiny_model:
        from kl3m_desk.tiny_model import write_tiny_model

        if source_model is not None:
            parser.error("--model and --tiny-model exclude each other")
        tokenizer = options.tokenizer if options.tokenizer.is_dir() else None
        if tokenizer is None:
            print(f"No tokenizer at {options.tokenizer}; the tiny model gets a trained one.")
        shutil.rmtree(BUILD / "tiny-model", ignore_errors=True)
        source_model = write_tiny_model(BUILD / "tiny-model", tokenizer)
    if source_model is not None:
        bundle_model = prepare_model(source_model, BUILD / "bundle-model")
    app_dir = run_pyinstaller(bundle_model)
    without_model = print_sizes(measure(app_dir))
    if sys.platform.startswith("linux") and without_model > MAX_APP_MB * 10**6:
        print(f"The app without a model is {without_model / 1e6:.1f} MB, over {MAX_APP_MB} MB.")
        return 1
    if options.self_test:
        run_self_test(app_dir)
    if options.tarball:
        make_tarball(app_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
