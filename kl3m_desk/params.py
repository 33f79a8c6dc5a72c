"""Sampling parameters: each is declared once here, with its range, default, unit and help text.

The sliders of the window, the options of `kl3m-desk generate` and the validation of stored
settings are all derived from `PARAMETERS`, so a range changes in one place only. The stop option
is a named choice rather than a number, so it has a declaration of its own, `STOP_AT`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from kl3m_desk.stopping import StopAt


@dataclass(frozen=True)
class ParameterSpec:
    """Declaration of one sampling parameter."""

    name: str  # attribute of SamplingParams and key in the settings file
    label: str  # label in the window
    kind: Literal["float", "int"]
    minimum: float
    maximum: float
    default: float | None  # None only for optional parameters
    step: float  # slider and spin-box step
    decimals: int  # digits shown after the decimal point
    unit: str  # unit for the help text, or "" for a plain number
    help: str  # one sentence: what the parameter sets
    metavar: str  # placeholder of the value in `--help`
    optional: bool = False  # True when a blank value is allowed (seed: blank means random)

    @property
    def option(self) -> str:
        """Return the command-line option, for example `--top-p`."""
        return "--" + self.name.replace("_", "-")

    def clamp(self, value: float) -> float:
        """Return `value` pulled into [minimum, maximum] and rounded to the parameter's kind."""
        bounded = min(max(value, self.minimum), self.maximum)
        return float(round(bounded)) if self.kind == "int" else round(bounded, self.decimals)

    def parse(self, raw: object) -> float | None:
        """Convert a stored or typed value, raising ValueError that names the parameter.

        A number out of range is pulled into range rather than rejected; a blank value is accepted
        only for optional parameters.
        """
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.optional:
                return None
            raise ValueError(f"{self.label} is empty. Enter a number from {self.describe_range()}.")
        if isinstance(raw, bool):
            raise ValueError(f"{self.label} must be a number, not {raw!r}.")
        try:
            number = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.label} must be a number from {self.describe_range()}, not {raw!r}."
            ) from None
        if not math.isfinite(number):
            raise ValueError(
                f"{self.label} must be a finite number from {self.describe_range()}, not {raw!r}."
            )
        return self.clamp(number)

    def describe_range(self) -> str:
        """Return the range in words, for messages and help text."""
        low = self.format_value(self.minimum)
        high = self.format_value(self.maximum)
        return f"{low} to {high}"

    def format_value(self, value: float) -> str:
        """Return `value` as the window and help text show it."""
        return str(int(value)) if self.kind == "int" else f"{value:.{self.decimals}f}"


# The top_p minimum stands for "above 0": nucleus sampling with p = 0 would keep no token at all.
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        name="temperature",
        label="Temperature",
        kind="float",
        minimum=0.0,
        maximum=2.0,
        default=0.5,
        step=0.05,
        decimals=2,
        unit="",
        metavar="T",
        help="Randomness of sampling; 0 always picks the most likely token (greedy decoding).",
    ),
    ParameterSpec(
        name="top_p",
        label="Top p",
        kind="float",
        minimum=0.01,
        maximum=1.0,
        default=0.95,
        step=0.01,
        decimals=2,
        unit="probability mass",
        metavar="P",
        help="Nucleus sampling: sample only from the most likely tokens whose probabilities add up "
        "to this share; 1 turns it off.",
    ),
    ParameterSpec(
        name="top_k",
        label="Top k",
        kind="int",
        minimum=0,
        maximum=1000,
        default=0,
        step=1,
        decimals=0,
        unit="tokens",
        metavar="K",
        help="Sample only from this many most likely tokens; 0 turns the limit off.",
    ),
    ParameterSpec(
        name="max_new_tokens",
        label="Max new tokens",
        kind="int",
        minimum=1,
        maximum=4095,
        default=128,
        step=1,
        decimals=0,
        unit="tokens",
        metavar="N",
        help="Maximum number of tokens to generate. The model's window (1,024 positions for "
        "kl3m-002-520m) caps it, and the prompt gets the rest of the window.",
    ),
    ParameterSpec(
        name="repetition_penalty",
        label="Repetition penalty",
        kind="float",
        minimum=1.0,
        maximum=2.0,
        default=1.1,
        step=0.01,
        decimals=2,
        unit="",
        metavar="R",
        help="Divides the score of every token already in the prompt or completion by this factor; "
        "1 turns it off.",
    ),
    ParameterSpec(
        name="seed",
        label="Seed",
        kind="int",
        minimum=0,
        maximum=2**32 - 1,
        default=None,
        step=1,
        decimals=0,
        unit="",
        metavar="S",
        help="Random seed that makes sampling repeatable; without one, each run draws a new "
        "random seed.",
        optional=True,
    ),
)

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class ChoiceSpec:
    """Declaration of a parameter that takes one of a few named values."""

    name: str  # attribute of SamplingParams and key in the settings file
    label: str  # label in the window
    choices: tuple[tuple[str, str], ...]  # (value, label of the value in the window)
    default: str
    help: str  # what the parameter sets, for tooltips and `--help`

    @property
    def option(self) -> str:
        """Return the command-line option, for example `--stop-at`."""
        return "--" + self.name.replace("_", "-")

    @property
    def values(self) -> tuple[str, ...]:
        """Return the allowed values in the order the window lists them."""
        return tuple(value for value, _ in self.choices)

    def parse(self, raw: object) -> str:
        """Return `raw` when it is one of the values, raising ValueError that names them."""
        if isinstance(raw, str) and raw in self.values:
            return raw
        raise ValueError(f"{self.label} must be one of {', '.join(self.values)}, not {raw!r}.")


STOP_AT = ChoiceSpec(
    name="stop_at",
    label="Stop at",
    choices=(
        ("none", "Max new tokens only"),
        ("sentence", "End of sentence"),
        ("paragraph", "End of paragraph"),
        ("clause", "Before the next clause number"),
    ),
    default="none",
    help="Where a completion ends before max new tokens: none (only max new tokens or the "
    "model's end of text), sentence (after the first finished sentence), paragraph (at the end "
    "of the first paragraph) or clause (just before the next clause number, such as (b), 2.1 or "
    "Section 3).",
)


@dataclass(frozen=True)
class SamplingParams:
    """Values of every parameter in `PARAMETERS` and of `STOP_AT`, already validated.

    The fields carry no defaults of their own: `SamplingParams.defaults()` reads them from the
    declarations, so each default is written once.
    """

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    repetition_penalty: float
    seed: int | None
    stop_at: StopAt

    @classmethod
    def defaults(cls) -> SamplingParams:
        """Return the declared default of every parameter."""
        return cls.from_mapping({})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SamplingParams:
        """Build from raw values (settings or options), raising ValueError on the first bad one.

        Missing keys take their defaults, values out of range are pulled into range, and keys that
        are not parameters are ignored.
        """
        parsed: dict[str, Any] = {}
        for spec in PARAMETERS:
            raw = values.get(spec.name, spec.default)
            number = spec.parse(raw)
            if number is None:
                parsed[spec.name] = None
            elif spec.kind == "int":
                parsed[spec.name] = int(number)
            else:
                parsed[spec.name] = number
        parsed[STOP_AT.name] = STOP_AT.parse(values.get(STOP_AT.name, STOP_AT.default))
        return cls(**parsed)

    def replace(self, **changes: Any) -> SamplingParams:
        """Return a copy with `changes` applied and validated like any other raw value."""
        return SamplingParams.from_mapping({**self.to_mapping(), **changes})

    def to_mapping(self) -> dict[str, Any]:
        """Return the values keyed by parameter name, for the settings file."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def greedy(self) -> bool:
        """True when temperature 0 selects greedy decoding."""
        return self.temperature == 0.0
