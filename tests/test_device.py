"""Device choice: hardware detection, automatic choice, overrides and the float32 parity check.

Hardware facts are faked for the choice tests. MPS is faked through select_and_verify's `convert`
argument: the fake keeps the tiny model on the CPU and changes its logits, so the parity check
runs real forward passes of the tiny model and detects a token mismatch or NaN logits.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from kl3m_desk import device as device_module
from kl3m_desk.device import (
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    PARITY_TOLERANCE,
    DeviceChoice,
    HardwareFacts,
    apply_threads,
    available_devices,
    available_dtypes,
    check_parity,
    choose_device,
    convert_model,
    detect_hardware,
    select_and_verify,
)
from kl3m_desk.generation import build_prompt, stream_completion
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams

LINUX_PLAIN = HardwareFacts(
    "Linux", "x86_64", cpu_bf16=False, mps_available=False, performance_cores=8
)
LINUX_BF16 = HardwareFacts(
    "Linux", "x86_64", cpu_bf16=True, mps_available=False, performance_cores=16
)
WINDOWS_BF16 = HardwareFacts(
    "Windows", "AMD64", cpu_bf16=True, mps_available=False, performance_cores=6
)
MAC_MPS = HardwareFacts("Darwin", "arm64", cpu_bf16=True, mps_available=True, performance_cores=4)
MAC_M1_NO_MPS = HardwareFacts(
    "Darwin", "arm64", cpu_bf16=False, mps_available=False, performance_cores=4
)
MAC_M2_NO_MPS = HardwareFacts(
    "Darwin", "arm64", cpu_bf16=True, mps_available=False, performance_cores=4
)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """Undo the process-wide torch.set_num_threads that apply_threads and select_and_verify make."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def prompt_ids(model: LoadedModel) -> torch.Tensor:
    text = "The Receiving Party shall hold the Confidential Information in strict confidence and"
    return torch.tensor(model.tokenizer(text, add_special_tokens=False)["input_ids"])


class LogitsFilter(torch.nn.Module):
    """A model that runs `inner` and passes its logits through `change`, standing in for MPS."""

    def __init__(self, inner: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.change = change

    # The engine built after a passing check borrows the inner model's weights.
    @property
    def model(self) -> Any:
        return self.inner.model

    @property
    def lm_head(self) -> Any:
        return self.inner.lm_head

    def forward(self, **inputs: Any) -> Any:
        output = self.inner(**inputs)
        output.logits = self.change(output.logits)
        return output


def fake_converter(
    change: Callable[[torch.Tensor], torch.Tensor], calls: list[tuple[str, torch.dtype]]
) -> Callable[[Any, str, torch.dtype], Any]:
    def convert(model: Any, device: str, dtype: torch.dtype) -> Any:
        calls.append((device, dtype))
        return LogitsFilter(model, change)

    return convert


# Automatic choice


def test_auto_without_bf16_is_cpu_float32() -> None:
    choice = choose_device(LINUX_PLAIN)
    assert (choice.device, choice.dtype) == ("cpu", "float32")
    assert choice.threads == 8
    assert "no native bfloat16" in choice.reason


def test_auto_with_bf16_is_cpu_bfloat16() -> None:
    for facts in (LINUX_BF16, WINDOWS_BF16):
        choice = choose_device(facts)
        assert (choice.device, choice.dtype) == ("cpu", "bfloat16"), facts
        assert choice.threads == facts.performance_cores
        assert "AVX512-BF16" in choice.reason


def test_auto_mac_with_mps_is_float16() -> None:
    choice = choose_device(MAC_MPS)
    assert (choice.device, choice.dtype) == ("mps", "float16")
    assert choice.reason.startswith("MPS, float16:")


def test_auto_mac_without_mps_uses_cpu() -> None:
    m1 = choose_device(MAC_M1_NO_MPS)
    assert (m1.device, m1.dtype) == ("cpu", "float32")
    assert "MPS is not available" in m1.reason

    m2 = choose_device(MAC_M2_NO_MPS)
    assert (m2.device, m2.dtype) == ("cpu", "bfloat16")
    assert "MPS is not available" in m2.reason
    assert "Arm BF16 extension" in m2.reason


def test_reason_is_one_sentence() -> None:
    for facts in (LINUX_PLAIN, LINUX_BF16, MAC_MPS, MAC_M1_NO_MPS, MAC_M2_NO_MPS):
        reason = choose_device(facts).reason
        assert reason.endswith(".")
        assert reason.count(". ") == 0, reason


def test_threads_at_least_one() -> None:
    facts = HardwareFacts(
        "Linux", "x86_64", cpu_bf16=False, mps_available=False, performance_cores=0
    )
    assert choose_device(facts).threads == 1


# Overrides


@pytest.mark.parametrize(
    ("facts", "device", "dtype", "expected"),
    [
        (LINUX_PLAIN, "cpu", "auto", ("cpu", "float32")),
        (LINUX_PLAIN, "auto", "float32", ("cpu", "float32")),
        (LINUX_BF16, "cpu", "float32", ("cpu", "float32")),
        (LINUX_BF16, "auto", "bfloat16", ("cpu", "bfloat16")),
        (MAC_MPS, "cpu", "auto", ("cpu", "bfloat16")),
        (MAC_MPS, "mps", "float32", ("mps", "float32")),
        (MAC_MPS, "auto", "float32", ("mps", "float32")),
        (MAC_MPS, "mps", "auto", ("mps", "float16")),
        # bfloat16 is offered on the CPU only, so "auto" moves to the CPU for it.
        (MAC_MPS, "auto", "bfloat16", ("cpu", "bfloat16")),
    ],
)
def test_valid_overrides_accepted(
    facts: HardwareFacts, device: str, dtype: str, expected: tuple[str, str]
) -> None:
    choice = choose_device(facts, device, dtype)
    assert (choice.device, choice.dtype) == expected
    assert "requested" in choice.reason


def test_mps_without_mps_rejected() -> None:
    with pytest.raises(ValueError, match='"mps"') as raised:
        choose_device(LINUX_BF16, device="mps")
    assert "auto, cpu" in str(raised.value)


def test_unknown_device_rejected() -> None:
    for value in ("cuda", "CPU", "", "gpu"):
        with pytest.raises(ValueError, match="Invalid device") as raised:
            choose_device(MAC_MPS, device=value)
        assert f'"{value}"' in str(raised.value)
        assert "auto, cpu, mps" in str(raised.value)


def test_unknown_dtype_rejected() -> None:
    for value in ("int8", "fp16", "half", "Float32"):
        with pytest.raises(ValueError, match="Invalid dtype") as raised:
            choose_device(LINUX_BF16, dtype=value)
        assert f'"{value}"' in str(raised.value)
        assert "float32" in str(raised.value)


def test_bfloat16_without_native_bf16_rejected() -> None:
    with pytest.raises(ValueError, match='"bfloat16"') as raised:
        choose_device(LINUX_PLAIN, dtype="bfloat16")
    message = str(raised.value)
    assert "no native bfloat16" in message
    assert "Choose one of: auto, float32." in message


def test_float16_on_cpu_rejected() -> None:
    for facts, choices in ((LINUX_PLAIN, "auto, float32"), (LINUX_BF16, "auto, bfloat16, float32")):
        for device in ("cpu", "auto"):
            with pytest.raises(ValueError, match='"float16"') as raised:
                choose_device(facts, device=device, dtype="float16")
            assert f"Choose one of: {choices}." in str(raised.value)


def test_bfloat16_on_mps_rejected() -> None:
    with pytest.raises(ValueError, match='"bfloat16" is not offered on MPS') as raised:
        choose_device(MAC_MPS, device="mps", dtype="bfloat16")
    assert "Choose one of: auto, float16, float32." in str(raised.value)


def decide(facts: HardwareFacts, device: str, dtype: str) -> DeviceChoice | str:
    """Return the choice, or the ValueError message when the combination is rejected."""
    try:
        return choose_device(facts, device, dtype)
    except ValueError as error:
        return str(error)


def test_every_valid_combination_is_decided() -> None:
    for facts in (LINUX_PLAIN, LINUX_BF16, WINDOWS_BF16, MAC_MPS, MAC_M1_NO_MPS, MAC_M2_NO_MPS):
        for device in DEVICE_CHOICES:
            for dtype in DTYPE_CHOICES:
                case = f"{facts.describe()}, device {device}, dtype {dtype}"
                choice = decide(facts, device, dtype)
                if isinstance(choice, str):
                    assert "Choose one of" in choice, case
                    continue
                assert choice.device in available_devices(facts), case
                assert choice.dtype in available_dtypes(facts, choice.device), case
                if choice.device == "cpu":
                    assert choice.dtype != "float16", case
                if not facts.cpu_bf16:
                    assert choice.dtype != "bfloat16", case


# Hardware detection


def test_detect_hardware_on_this_machine() -> None:
    facts = detect_hardware()
    assert facts.system == platform.system()
    assert facts.machine == platform.machine()
    assert 1 <= facts.performance_cores <= (os.cpu_count() or 1)
    if platform.system() != "Darwin":
        assert facts.mps_available is False
    capabilities = torch.cpu.get_capabilities()
    if facts.machine.lower() in ("x86_64", "amd64"):
        native = bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
        expected = native and torch.backends.mkldnn.is_available()
        assert facts.cpu_bf16 == expected
    assert facts.system in facts.describe()


def test_detect_hardware_survives_failing_probes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> None:
        raise RuntimeError("probe failed")

    monkeypatch.setattr(device_module, "_read_cpu_capabilities", fail)
    monkeypatch.setattr(device_module, "_mps_available", fail)
    monkeypatch.setattr(device_module, "_count_performance_cores", lambda *_: fail())
    with caplog.at_level(logging.WARNING, logger="kl3m_desk.device"):
        facts = detect_hardware()

    assert facts.cpu_bf16 is False
    assert facts.mps_available is False
    assert facts.performance_cores >= 1
    assert "Could not detect MPS availability" in caplog.text
    assert "Could not detect the number of performance cores" in caplog.text
    choice = choose_device(facts)
    assert (choice.device, choice.dtype) == ("cpu", "float32")


def test_apply_threads_sets_torch() -> None:
    apply_threads(DeviceChoice("cpu", "float32", 1, "test"))
    assert torch.get_num_threads() == 1


# Conversion and parity check on the tiny model


def test_convert_model_leaves_original(tiny_model: LoadedModel) -> None:
    copy = convert_model(tiny_model.model, "cpu", torch.bfloat16)
    assert copy is not tiny_model.model
    assert copy.dtype == torch.bfloat16
    assert tiny_model.model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in tiny_model.model.parameters())
    assert copy.model.rotary_emb.inv_freq.dtype == torch.float32
    original_ids = {id(p) for p in tiny_model.model.parameters()}
    assert not original_ids & {id(p) for p in copy.parameters()}


def test_parity_bfloat16_on_tiny_model(tiny_model: LoadedModel) -> None:
    candidate = convert_model(tiny_model.model, "cpu", torch.bfloat16)
    ok, reason = check_parity(
        candidate, tiny_model.model, "cpu", torch.bfloat16, prompt_ids(tiny_model), steps=6
    )
    assert ok, reason
    assert "bfloat16 on the CPU agrees with CPU float32 on 6 greedy steps" in reason


def test_parity_float32_copy_is_identical(tiny_model: LoadedModel) -> None:
    candidate = convert_model(tiny_model.model, "cpu", torch.float32)
    ok, reason = check_parity(
        candidate, tiny_model.model, "cpu", torch.float32, prompt_ids(tiny_model)
    )
    assert ok, reason
    assert "(4 identical tokens, 0 near-ties" in reason


def test_parity_without_reference_checks_finite(tiny_model: LoadedModel) -> None:
    ok, reason = check_parity(tiny_model.model, None, "cpu", "float32", prompt_ids(tiny_model))
    assert ok, reason
    assert "not compared" in reason

    broken = LogitsFilter(tiny_model.model, lambda logits: logits * float("inf"))
    ok, reason = check_parity(broken, None, "cpu", "float32", prompt_ids(tiny_model))
    assert not ok
    assert "infinite logits at step 1" in reason


def test_parity_rejects_bad_arguments(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="steps"):
        check_parity(tiny_model.model, None, "cpu", "float32", prompt_ids(tiny_model), steps=0)
    with pytest.raises(ValueError, match="empty"):
        check_parity(tiny_model.model, None, "cpu", "float32", torch.tensor([], dtype=torch.long))


def test_parity_detects_reversed_ranking(tiny_model: LoadedModel) -> None:
    # Negated logits make the candidate pick float32's least likely token. Even on random weights
    # its float32 log-probability is more than PARITY_TOLERANCE below the top token.
    reversed_model = LogitsFilter(tiny_model.model, lambda logits: -logits)
    ok, reason = check_parity(
        reversed_model, tiny_model.model, "cpu", torch.float16, prompt_ids(tiny_model)
    )
    assert not ok
    assert "at step 1 of 4 where float32 picked" in reason
    assert f"(tolerance {PARITY_TOLERANCE})" in reason


# select_and_verify with MPS faked


def test_fake_mps_mismatch_falls_back(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, torch.dtype]] = []
    convert = fake_converter(lambda logits: -logits, calls)
    with caplog.at_level(logging.WARNING, logger="kl3m_desk.device"):
        result, choice = select_and_verify(tiny_model, MAC_MPS, convert=convert)

    assert calls == [("mps", torch.float16)]
    assert result is tiny_model
    assert (choice.device, choice.dtype) == ("cpu", "float32")
    assert "float16 on MPS failed a short check against float32" in choice.reason
    assert "Falling back to CPU float32" in caplog.text
    assert "where float32 picked" in caplog.text


def test_fake_mps_nan_falls_back(tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, torch.dtype]] = []
    convert = fake_converter(lambda logits: torch.full_like(logits, float("nan")), calls)
    with caplog.at_level(logging.WARNING, logger="kl3m_desk.device"):
        result, choice = select_and_verify(tiny_model, MAC_MPS, convert=convert)

    assert result is tiny_model
    assert (choice.device, choice.dtype) == ("cpu", "float32")
    # The fake keeps the weights on the CPU, so the check's message names the CPU.
    assert "float16 on the CPU produced NaN logits at step 1 of 4" in caplog.text


def test_fake_mps_nan_at_later_step(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    # NaN only in the incremental decode path (one new token), not in the prompt's prefill.
    def nan_after_prefill(logits: torch.Tensor) -> torch.Tensor:
        return torch.full_like(logits, float("nan")) if logits.shape[1] == 1 else logits

    convert = fake_converter(nan_after_prefill, [])
    with caplog.at_level(logging.WARNING, logger="kl3m_desk.device"):
        _, choice = select_and_verify(tiny_model, MAC_MPS, convert=convert)

    assert choice.device == "cpu"
    assert "NaN logits at step 2 of 4" in caplog.text


def test_fake_mps_device_error_falls_back(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(model: Any, device: str, dtype: torch.dtype) -> Any:
        raise NotImplementedError("The operator 'aten::example' is not implemented for MPS")

    with caplog.at_level(logging.WARNING, logger="kl3m_desk.device"):
        result, choice = select_and_verify(tiny_model, MAC_MPS, convert=fail)

    assert result is tiny_model
    assert choice.device == "cpu"
    assert "aten::example" in caplog.text


def test_fake_mps_passing_is_used(tiny_model: LoadedModel) -> None:
    calls: list[tuple[str, torch.dtype]] = []
    result, choice = select_and_verify(
        tiny_model, MAC_MPS, convert=fake_converter(lambda logits: logits, calls)
    )
    assert (choice.device, choice.dtype) == ("mps", "float16")
    assert isinstance(result.model, LogitsFilter)
    assert result.device == torch.device("mps")
    assert result.dtype == torch.float16
    assert tiny_model.device == torch.device("cpu")


def test_cpu_float32_is_not_converted(tiny_model: LoadedModel) -> None:
    calls: list[tuple[str, torch.dtype]] = []
    result, choice = select_and_verify(
        tiny_model, LINUX_PLAIN, convert=fake_converter(lambda logits: logits, calls)
    )
    assert result is tiny_model
    assert (choice.device, choice.dtype) == ("cpu", "float32")
    assert calls == []
    assert torch.get_num_threads() == LINUX_PLAIN.performance_cores


def test_select_rejects_invalid_override(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match='"mps"'):
        select_and_verify(tiny_model, LINUX_BF16, device="mps")


# CPU bfloat16 on this machine, for real


def test_real_bfloat16_on_this_cpu(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    facts = detect_hardware()
    if not facts.cpu_bf16:
        pytest.skip(f"this CPU has no native bfloat16 ({facts.describe()})")

    with caplog.at_level(logging.INFO, logger="kl3m_desk.device"):
        result, choice = select_and_verify(tiny_model, facts)

    assert (choice.device, choice.dtype) == ("cpu", "bfloat16"), caplog.text
    assert "agrees with CPU float32" in caplog.text
    assert result is not tiny_model
    assert result.dtype == torch.bfloat16
    assert result.model.dtype == torch.bfloat16
    assert tiny_model.model.dtype == torch.float32

    sampling = SamplingParams.defaults().replace(max_new_tokens=12, seed=3)
    prompt = build_prompt(result, "The Supplier shall indemnify the Customer", 12)
    pieces: list[str] = []
    generated = stream_completion(result, prompt, sampling, pieces.append)
    assert generated.token_ids
    assert "".join(pieces) == generated.text
