"""Choosing the device, precision and thread count for the model, and checking the choice.

`detect_hardware` collects the few facts the choice depends on, and `choose_device` turns them and
the user's overrides into a `DeviceChoice`. `load_and_place` loads the model for that choice: on
the CPU straight into the chosen dtype, on MPS through `select_and_verify`, which converts a
freshly loaded CPU float32 model and compares a few greedy decode steps with float32 before using
it.
A 16-bit copy that produces NaN or infinite logits, fails on the device, or picks tokens that
float32 rates clearly worse is dropped, and the model stays on the CPU in float32.

Automatic choice:
- A Mac where MPS is available runs on MPS in float16.
- Elsewhere the CPU runs bfloat16 only when it has native bfloat16 matrix instructions
  (AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on Arm). Without them, PyTorch's bfloat16
  matrix products run many times slower than float32, so such a CPU runs float32.

Memory: kl3m-002-520m's weights take 2.1 GB in float32 and 1.0 GB in a 16-bit dtype. While the
MPS check runs, both copies exist (about 3.1 GB). After it, the caller drops the float32 model and
keeps 1.0 GB, or keeps 2.1 GB after a fallback. On a Mac, "mps" memory is the same unified memory.
Nothing here imports Qt.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from kl3m_desk.engine import Engine, WeightFormat
from kl3m_desk.model import LoadedModel, ProgressCallback, load_model

log = logging.getLogger(__name__)

T = TypeVar("T")

DEVICE_CHOICES = ("auto", "cpu", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
ARM_MACHINES = frozenset({"arm64", "aarch64"})

SYSCTL = "/usr/sbin/sysctl"
SYSCTL_TIMEOUT_SECONDS = 2.0
SMT_STATE_FILE = Path("/sys/devices/system/cpu/smt/active")

PARITY_STEPS = 4
# Largest float32 log-probability gap (in nats) between float32's top token and the token the
# candidate picks, for the candidate's pick to count as a near-tie rather than a mismatch.
# NOTE: 0.5 nats (the picked token is at least 61% as likely as the top one) is a judgment, not yet
# tried on kl3m-002-520m's real weights. On the tiny random test model, bfloat16's differing picks
# were within 0.002 nats of float32's top token.
PARITY_TOLERANCE = 0.5
PARITY_TOP_TOKENS = 10  # tokens whose log-probability differences the success message reports
PARITY_PROMPT = (
    "This Agreement shall be governed by and construed in accordance with the laws of the State of"
)

# Copies a CPU float32 model to (device, dtype), leaving the original unchanged.
ModelConverter = Callable[[Any, str, torch.dtype], Any]


@dataclass(frozen=True)
class HardwareFacts:
    """The facts about this machine that the device choice depends on."""

    system: str  # platform.system(): "Darwin", "Windows", "Linux"
    machine: str  # platform.machine(): "arm64", "x86_64", "AMD64", "aarch64"
    cpu_bf16: bool  # the CPU has native bfloat16 matrix instructions (AVX512-BF16, AMX-BF16, BF16)
    mps_available: bool  # torch.backends.mps.is_available()
    # Physical performance cores this process may use. On macOS this is hw.perflevel0.physicalcpu
    # (the P-cores). Elsewhere it is PyTorch's count of physical cores, which includes the
    # efficiency cores of hybrid Intel CPUs, capped at the CPUs the process may run on (Linux).
    performance_cores: int

    def describe(self) -> str:
        """Return a one-line summary for the log and the diagnostics."""
        return (
            f"{self.system} {self.machine}, {self.performance_cores} performance cores, "
            f"native bfloat16: {'yes' if self.cpu_bf16 else 'no'}, "
            f"MPS: {'available' if self.mps_available else 'not available'}"
        )


@dataclass(frozen=True)
class DeviceChoice:
    """The device, precision and thread count the model runs with, and the reason for them."""

    device: str  # "cpu" or "mps"
    dtype: str  # "float32", "bfloat16" or "float16"
    threads: int  # CPU threads for torch.set_num_threads
    reason: str  # one sentence shown to the user


def detect_hardware() -> HardwareFacts:
    """Detect the hardware facts of this machine without network access.

    Never raises: a probe that fails is logged and replaced by the safe value (no native bfloat16,
    no MPS, half the logical CPUs), which leads to CPU float32.
    """
    system = platform.system() or "unknown"
    machine = platform.machine() or "unknown"
    no_capabilities: Mapping[str, Any] = {}
    capabilities = _probe("the CPU capabilities", _read_cpu_capabilities, no_capabilities)
    facts = HardwareFacts(
        system=system,
        machine=machine,
        cpu_bf16=_probe(
            "native bfloat16 support", lambda: _cpu_has_bf16(machine, capabilities), False
        ),
        mps_available=_probe("MPS availability", _mps_available, False),
        performance_cores=_probe(
            "the number of performance cores",
            lambda: _count_performance_cores(system, capabilities),
            max(1, (os.cpu_count() or 1) // 2),
        ),
    )
    log.info("Hardware: %s", facts.describe())
    return facts


def _probe(description: str, detect: Callable[[], T], fallback: T) -> T:
    # Probes run foreign platform code (cpuinfo, Metal, sysctl) whose failures are not all
    # documented, and detect_hardware must not raise, so every exception becomes the fallback.
    try:
        return detect()
    except Exception as error:
        log.warning("Could not detect %s (%r), so assuming %r", description, error, fallback)
        return fallback


def _read_cpu_capabilities() -> Mapping[str, Any]:
    # torch.cpu.get_capabilities() (PyTorch 2.13) reports the instruction sets found by cpuinfo,
    # for example avx512_bf16 and amx_bf16 on x86 and bf16 on Arm, and num_physical_cores.
    return torch.cpu.get_capabilities()


def _cpu_has_bf16(machine: str, capabilities: Mapping[str, Any]) -> bool:
    architecture = machine.lower()
    if architecture in X86_MACHINES:
        # PyTorch reaches the bfloat16 instructions through oneDNN (mkldnn). Without it, bfloat16
        # matrix products take a slow reference path even on a CPU that has the instructions.
        has_instructions = bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
        return has_instructions and torch.backends.mkldnn.is_available()
    if architecture in ARM_MACHINES:
        # NOTE: on Apple CPUs the speed of PyTorch's bfloat16 matrix products has not been measured
        # here; the parity check guards correctness only.
        return bool(capabilities.get("bf16"))
    return False


def _mps_available() -> bool:
    return bool(torch.backends.mps.is_available())


def _count_performance_cores(system: str, capabilities: Mapping[str, Any]) -> int:
    cores: int | None = None
    if system == "Darwin":
        # Intel Macs have no performance levels, so hw.perflevel0 is missing there.
        cores = _read_sysctl_int("hw.perflevel0.physicalcpu") or _read_sysctl_int("hw.physicalcpu")
    if not cores:
        reported = capabilities.get("num_physical_cores")
        if isinstance(reported, int) and reported > 0:
            cores = reported
    if not cores:
        logical = os.cpu_count() or 1
        cores = logical // 2 if _smt_active() else logical

    if hasattr(os, "sched_getaffinity"):
        # A container or `taskset` may allow fewer CPUs than the machine has.
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores)


def _read_sysctl_int(name: str) -> int | None:
    try:
        completed = subprocess.run(
            [SYSCTL, "-n", name],
            capture_output=True,
            text=True,
            timeout=SYSCTL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("Could not run %s -n %s: %s", SYSCTL, name, error)
        return None
    if completed.returncode != 0:
        log.debug("%s -n %s failed: %s", SYSCTL, name, completed.stderr.strip())
        return None
    try:
        return int(completed.stdout.strip())
    except ValueError:
        log.warning("%s -n %s returned %r, not a number", SYSCTL, name, completed.stdout)
        return None


def _smt_active() -> bool:
    # The file exists on Linux only, so elsewhere SMT is treated as off.
    try:
        return SMT_STATE_FILE.read_text(encoding="ascii").strip() == "1"
    except OSError:
        return False


def available_devices(facts: HardwareFacts) -> tuple[str, ...]:
    """Return the devices this machine offers, without "auto"."""
    return ("cpu", "mps") if facts.mps_available else ("cpu",)


def available_dtypes(facts: HardwareFacts, device: str) -> tuple[str, ...]:
    """Return the dtypes offered on `device` of this machine, fastest first, without "auto".

    MPS offers no bfloat16: PyTorch supports it there only from macOS 14, and Apple's M1 and M2
    GPUs emulate it with float32 arithmetic. The CPU offers no float16: on x86 CPUs without
    AVX512-FP16 or AMX-FP16, PyTorch's float16 matrix products are many times slower than float32,
    and on Arm CPUs their speed has not been measured for this module.
    """
    if device == "mps":
        return ("float16", "float32")
    return ("bfloat16", "float32") if facts.cpu_bf16 else ("float32",)


def choose_device(facts: HardwareFacts, device: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """Choose the device, dtype and thread count for `facts`, honoring `device` and `dtype`.

    "auto" picks MPS with float16 where MPS is available, otherwise the CPU with bfloat16 when it
    computes bfloat16 natively and float32 when it does not. An explicit value that this machine
    does not offer raises ValueError naming it and the valid choices. That includes bfloat16 on a
    CPU without native bfloat16: it would compute correctly but many times slower than float32, so
    the editor would seem to hang. A caller that reads the values from saved settings can show the
    message and retry with "auto", since settings may come from another machine.
    """
    if device not in DEVICE_CHOICES:
        raise ValueError(
            f'Invalid device "{device}". Choose one of: '
            f"{', '.join(('auto', *available_devices(facts)))}."
        )
    if dtype not in DTYPE_CHOICES:
        raise ValueError(
            f'Invalid dtype "{dtype}". Choose one of: {", ".join(DTYPE_CHOICES)}, '
            "as far as this machine offers them."
        )
    if device == "mps" and not facts.mps_available:
        raise ValueError(
            'The device "mps" is not available on this machine, because '
            "torch.backends.mps.is_available() returned False. Choose one of: auto, cpu."
        )

    resolved_device = device
    if device == "auto":
        mps_fits = dtype == "auto" or dtype in available_dtypes(facts, "mps")
        resolved_device = "mps" if facts.mps_available and mps_fits else "cpu"
    offered = available_dtypes(facts, resolved_device)
    resolved_dtype = offered[0] if dtype == "auto" else dtype
    if resolved_dtype not in offered:
        raise ValueError(_explain_rejected_dtype(facts, resolved_device, dtype, offered))

    threads = max(1, facts.performance_cores)
    reason = _explain_choice(facts, device, dtype, resolved_device, resolved_dtype, threads)
    return DeviceChoice(resolved_device, resolved_dtype, threads, reason)


def _explain_rejected_dtype(
    facts: HardwareFacts, device: str, dtype: str, offered: tuple[str, ...]
) -> str:
    choices = ", ".join(("auto", *offered))
    if device == "mps":
        cause = "PyTorch supports bfloat16 on MPS only from macOS 14, and M1 and M2 GPUs emulate it"
    elif dtype == "float16":
        cause = "PyTorch's float16 matrix products on most CPUs are much slower than float32"
    else:
        cause = (
            f"this processor has no native bfloat16 instructions ({_bf16_feature(facts)}), so "
            "bfloat16 would run many times slower than float32"
        )
    return (
        f'The dtype "{dtype}" is not offered on {_device_label(device)}, because {cause}. '
        f"Choose one of: {choices}."
    )


def _explain_choice(
    facts: HardwareFacts,
    device_request: str,
    dtype_request: str,
    device: str,
    dtype: str,
    threads: int,
) -> str:
    label = f"MPS, {dtype}" if device == "mps" else f"CPU ({threads} threads), {dtype}"
    if device_request != "auto" and dtype_request != "auto":
        return f"{label}: device {device} and dtype {dtype} were requested."

    parts: list[str] = []
    if device_request != "auto":
        parts.append(f"device {device} was requested")
    elif device == "mps":
        parts.append("this Mac's GPU is available through Metal (MPS)")
    elif facts.system == "Darwin":
        parts.append("MPS is not available")

    if dtype_request != "auto":
        parts.append(f"dtype {dtype} was requested")
    elif dtype == "bfloat16":
        parts.append(f"this processor computes bfloat16 natively ({_bf16_feature(facts)})")
    elif device == "cpu":
        parts.append("this processor has no native bfloat16 instructions, so float32 runs fastest")
    return f"{label}: {', and '.join(parts)}."


def _bf16_feature(facts: HardwareFacts) -> str:
    if facts.machine.lower() in ARM_MACHINES:
        return "the Arm BF16 extension"
    return "AVX512-BF16 or AMX-BF16"


def _device_label(device: str) -> str:
    return "MPS" if device == "mps" else "the CPU"


def apply_threads(choice: DeviceChoice) -> None:
    """Set PyTorch's intra-op CPU thread count for the whole process to `choice.threads`."""
    torch.set_num_threads(choice.threads)
    log.info("Using %d CPU threads", choice.threads)


def convert_model(model: Any, device: str, dtype: torch.dtype) -> Any:
    """Return a copy of `model` whose floating-point parameters are on `device` in `dtype`.

    `model` is left unchanged. The copy adds one set of weights in `dtype` and never a second
    float32 set, because the parameters are converted one by one and handed to the copy. Buffers
    only move and keep their dtype: Mixtral's rotary `inv_freq` stays float32, because float16
    rounding of it would shift the rotary angles at far positions.
    """
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        target = dtype if parameter.is_floating_point() else parameter.dtype
        converted = parameter.detach().to(device=device, dtype=target)
        memo[id(parameter)] = torch.nn.Parameter(converted, requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.to(device=device, copy=True)
    return copy.deepcopy(model, memo)


def check_parity(
    model: Any,
    reference: Any | None,
    device: str,
    dtype: torch.dtype | str,
    input_ids: torch.Tensor,
    steps: int = PARITY_STEPS,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[bool, str]:
    """Compare `steps` greedy decode steps of `model` on `device` with the CPU float32 `reference`.

    The reference picks each next token greedily, and the candidate `model` is fed the same tokens,
    so a single near-tie cannot derail the later steps. A step fails when the candidate's logits
    contain NaN or infinity, or when the token it would pick has a float32 log-probability more
    than `tolerance` nats below float32's top token. With `reference` None, only the logits are
    checked for NaN and infinity. Returns (ok, reason), the reason being one sentence for the log.
    Exceptions from either model propagate. Cost: `steps` forward passes of each model over a
    short prompt, estimated (not measured) at a few seconds for kl3m-002-520m on a laptop CPU.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}.")
    prompt = input_ids.reshape(1, -1)
    if prompt.shape[1] == 0:
        raise ValueError("input_ids is empty. Pass at least one token id.")
    label = f"{str(dtype).removeprefix('torch.')} on {_device_label(device.split(':')[0])}"

    reference_logits: list[torch.Tensor] | None = None
    forced_tokens: list[int] | None = None
    if reference is not None:
        reference_logits = _decode_greedily(reference, torch.device("cpu"), prompt, steps, None)
        forced_tokens = [int(logits.argmax()) for logits in reference_logits]
    candidate_logits = _decode_greedily(model, torch.device(device), prompt, steps, forced_tokens)

    for step, logits in enumerate(candidate_logits, start=1):
        if torch.isnan(logits).any():
            return False, f"{label} produced NaN logits at step {step} of {steps}."
        if torch.isinf(logits).any():
            return False, f"{label} produced infinite logits at step {step} of {steps}."
    if reference_logits is None:
        return True, (
            f"{label} produced finite logits on {steps} greedy steps, but tokens were not "
            "compared because no float32 reference was given."
        )

    # A 16-bit copy differs from float32 by rounding, so where float32's top two tokens are nearly
    # tied the two may legitimately pick different tokens. On the tiny random test model the top
    # two logits are often within 0.01 of each other while bfloat16 shifts logits by about 0.005.
    # Demanding the identical token would reject correct conversions, and skipping tied steps
    # would leave such models unchecked. So a pick passes when float32 itself rates it nearly as
    # likely as its own top token. A broken kernel picks tokens far down float32's ranking.
    identical = 0
    largest_difference = 0.0
    for step, (expected, actual) in enumerate(
        zip(reference_logits, candidate_logits, strict=True), start=1
    ):
        expected_log_probs = torch.log_softmax(expected, dim=-1)
        actual_log_probs = torch.log_softmax(actual, dim=-1)
        best = int(expected_log_probs.argmax())
        picked = int(actual_log_probs.argmax())
        gap = float(expected_log_probs[best] - expected_log_probs[picked])
        if picked == best:
            identical += 1
        elif gap > tolerance:
            return False, (
                f"{label} picked token {picked} at step {step} of {steps} where float32 picked "
                f"{best}, whose float32 log-probability is {gap:.2f} nats higher "
                f"(tolerance {tolerance})."
            )
        top = expected_log_probs.topk(min(PARITY_TOP_TOKENS, expected.numel())).indices
        difference = (actual_log_probs[top] - expected_log_probs[top]).abs().max()
        largest_difference = max(largest_difference, float(difference))
    return True, (
        f"{label} agrees with CPU float32 on {steps} greedy steps ({identical} identical tokens, "
        f"{steps - identical} near-ties within {tolerance} nats, largest log-probability "
        f"difference on float32's top {PARITY_TOP_TOKENS} tokens {largest_difference:.3f})."
    )


def _decode_greedily(
    model: Any,
    device: torch.device,
    prompt: torch.Tensor,
    steps: int,
    forced_tokens: list[int] | None,
) -> list[torch.Tensor]:
    # Runs the prompt, then one token at a time through the key-value cache as stream_completion
    # does, so the check covers both the prefill and the incremental path. Returns each step's
    # last-position logits as float32 on the CPU.
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    next_input = prompt.to(device)
    rows: list[torch.Tensor] = []
    with torch.inference_mode():
        for step in range(steps):
            output = model(input_ids=next_input, cache=cache, use_cache=True)
            logits = output.logits[0, -1, :].float().cpu()
            rows.append(logits)
            token = forced_tokens[step] if forced_tokens is not None else int(logits.argmax())
            next_input = torch.tensor([[token]], dtype=torch.long, device=device)
    return rows


def select_and_verify(
    loaded: LoadedModel,
    facts: HardwareFacts,
    device: str = "auto",
    dtype: str = "auto",
    log: logging.Logger = log,
    convert: ModelConverter = convert_model,
    input_ids: torch.Tensor | None = None,
) -> tuple[LoadedModel, DeviceChoice]:
    """Choose a device and dtype for `loaded`, convert a copy to it and check it against float32.

    `loaded` must be on the CPU in float32, as load_model returns it, and is never changed. For
    CPU float32 it is returned as is. Any other choice is checked with check_parity on
    `input_ids` (default: PARITY_PROMPT). On NaN, infinity, a mismatch or an error on the device,
    the warning goes to `log` and the result is `loaded` with a CPU float32 choice whose reason
    names the fallback. After a successful check, the caller should drop its reference to `loaded`
    so the 2.1 GB of float32 weights are freed. Raises ValueError for an invalid `device` or
    `dtype` (see choose_device). `convert` makes the copy; tests replace it.
    """
    if loaded.device.type != "cpu" or loaded.dtype != torch.float32:
        raise ValueError(
            f"select_and_verify needs the model on the CPU in float32, as load_model returns "
            f"it, not on {loaded.device.type} in {loaded.dtype_name}."
        )
    choice = choose_device(facts, device, dtype)
    apply_threads(choice)
    if choice.device == "cpu" and choice.dtype == "float32":
        log.info("Device choice: %s", choice.reason)
        return loaded, choice

    target_dtype: torch.dtype = getattr(torch, choice.dtype)
    prompt = input_ids if input_ids is not None else _tokenize_parity_prompt(loaded)
    started = time.perf_counter()
    candidate: Any = None
    try:
        candidate = convert(loaded.model, choice.device, target_dtype)
        # The inputs go where the converted weights are; for the real converter that is
        # choice.device, and a test's converter may keep them on the CPU.
        candidate_device = str(next(candidate.parameters()).device)
        ok, detail = check_parity(candidate, loaded.model, candidate_device, target_dtype, prompt)
    except (RuntimeError, TypeError) as error:
        # MPS raises NotImplementedError (a RuntimeError) for operators it lacks and TypeError
        # for dtypes it cannot hold.
        ok = False
        detail = f"{choice.dtype} on {_device_label(choice.device)} failed: {error}"
    log.info("Parity check took %.2f s: %s", time.perf_counter() - started, detail)

    if ok:
        log.info("Device choice: %s", choice.reason)
        converted = replace(
            loaded,
            model=candidate,
            device=torch.device(choice.device),
            dtype=target_dtype,
            engine=Engine(candidate, "fast"),
        )
        return converted, choice

    del candidate
    if choice.device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
    fallback = DeviceChoice(
        device="cpu",
        dtype="float32",
        threads=choice.threads,
        reason=(
            f"CPU ({choice.threads} threads), float32: {choice.dtype} on "
            f"{_device_label(choice.device)} failed a short check against float32, so the "
            "model runs in float32 on the CPU."
        ),
    )
    log.warning("Falling back to CPU float32: %s", detail)
    return loaded, fallback


def _tokenize_parity_prompt(loaded: LoadedModel) -> torch.Tensor:
    # Tokenized as build_prompt tokenizes document text: without special tokens.
    ids: list[int] = list(loaded.tokenizer(PARITY_PROMPT, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


PRECISIONS = ("fast", "exact")


def load_and_place(
    folder: Path,
    device: str = "auto",
    precision: str = "fast",
    progress: ProgressCallback | None = None,
    facts: HardwareFacts | None = None,
) -> LoadedModel:
    """Load the model in `folder` on the device and in the precision the user requested.

    "exact" is the reference computation: CPU float32, multiplied as transformers does. "fast" is
    the automatic choice of choose_device with the engine's fused layout. On the CPU the weights
    are read straight into the chosen dtype, so a bfloat16 load never makes a float32 copy. Its
    accuracy is checked by the test suite against float32 rather than on every start. MPS loads
    float32 first and keeps the converted copy only if it passes check_parity. A device this
    machine does not offer (settings from another computer) falls back to the automatic choice,
    and the reason says so. Raises ModelLoadError like load_model, and ValueError for an unknown
    precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'Invalid precision "{precision}". Choose one of: fast, exact.')
    facts = facts or detect_hardware()
    dtype = "float32" if precision == "exact" else "auto"
    note = ""
    try:
        choice = choose_device(facts, device, dtype)
    except ValueError as error:
        log.warning("Device override %s rejected: %s", device, error)
        device = "auto"
        choice = choose_device(facts, device, dtype)
        note = f"{error} Using the automatic choice instead: "
    apply_threads(choice)
    weights: WeightFormat = "exact" if precision == "exact" else "fast"
    if choice.device == "cpu":
        loaded = load_model(folder, progress, dtype=getattr(torch, choice.dtype), weights=weights)
    else:
        loaded = load_model(folder, progress)
        loaded, choice = select_and_verify(loaded, facts, device, dtype)
    log.info("Device for %s: %s (%s)", loaded.name, choice, facts.describe())
    return replace(loaded, device_reason=note + choice.reason)
