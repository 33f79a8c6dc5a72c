"""Generation records: how each generated passage was made, and whether a person reviewed it.

Every completion inserted into a document gets a `GenerationRecord`. It contains the model, the
sha256 of its weights, device and precision, the sampling parameters and seed, the prompt's token
ids and text, the generated text and tokens, and the time. It also records whether and when the
passage was marked reviewed. The records of a document saved as `contract.txt` are written
beside it as `contract.txt.kl3m.json` (see `sidecar_path`), with the position and current text
of each passage. The same file keeps the passages pinned into every prompt (see
kl3m_desk.context), so that they come back with the document, and the values last entered in
clause template fields (the parties, the governing state), which are offered again as defaults.
Files without pins or field values still load.

Positions in the file count Unicode code points of the document text with "\\n" line endings,
which is the text `kl3m_desk.documents.read_document` returns, whatever line endings the file
on disk uses. Qt counts UTF-16 code units instead, and `OffsetMap` converts between the two.

Nothing here imports Qt.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kl3m_desk.context import PinnedPassage
from kl3m_desk.fingerprint import WeightFingerprint
from kl3m_desk.generation import GenerationResult, Prompt
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.settings import write_text_atomically

SIDECAR_SUFFIX = ".kl3m.json"
FILE_FORMAT = "kl3m-desk generation records"
FILE_VERSION = 1
OFFSET_UNIT = "Unicode code points of the document text with \\n line endings"

# GenerationRecord.stop_reason values besides those of GenerationResult ("eos", "length",
# "stopped"): the run failed after inserting text, or its result never arrived because another
# run replaced it.
STOP_FAILED = "failed"
STOP_UNKNOWN = "unknown"


class ReviewFileError(Exception):
    """A records file is unreadable or invalid. The message names the file and the problem."""


def utc_timestamp() -> str:
    """Return the current time as ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def text_sha256(text: str) -> str:
    """Return the hex sha256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sidecar_path(document: Path) -> Path:
    """Return the records file that belongs beside `document`, for example `a.txt.kl3m.json`."""
    return document.with_name(document.name + SIDECAR_SUFFIX)


class OffsetMap:
    """Converts offsets in `text` between code points (Python) and UTF-16 code units (Qt).

    Characters outside the Basic Multilingual Plane (emoji, rare CJK) are one code point but two
    UTF-16 code units.
    """

    def __init__(self, text: str) -> None:
        if not _has_astral(text):  # the usual case, checked without a Python loop
            self._astral: list[int] = []
        else:
            self._astral = [index for index, char in enumerate(text) if ord(char) > 0xFFFF]
        # UTF-16 offset of each astral character
        self._astral_utf16 = [index + count for count, index in enumerate(self._astral)]

    def to_utf16(self, code_point: int) -> int:
        """Return the UTF-16 offset of code point offset `code_point`."""
        return code_point + bisect.bisect_left(self._astral, code_point)

    def to_code_point(self, utf16: int) -> int:
        """Return the code point offset of UTF-16 offset `utf16`."""
        return utf16 - bisect.bisect_left(self._astral_utf16, utf16)


def _has_astral(text: str) -> bool:
    """Return True when `text` has a character outside the Basic Multilingual Plane.

    `str.isascii` takes constant time in CPython, and one UTF-16 encoding is several times faster
    than `max(text)`, which matters for a document of a million characters.
    """
    if text.isascii():
        return False
    return len(text.encode("utf-16-le", "surrogatepass")) != 2 * len(text)


def utf16_length(text: str) -> int:
    """Return the length of `text` in UTF-16 code units, as Qt counts positions."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


@dataclass
class ModelIdentity:
    """The model that generated a passage, and where it ran."""

    name: str
    folder: str
    sha256: str | None  # of the weights (see WeightFingerprint.sha256), or None while unknown
    sha256_source: str  # "manifest", "download record", "computed", ... or "not available"
    weight_files: list[dict[str, Any]]  # name, size, sha256 and source of each weight file
    device: str  # for example "cpu"
    dtype: str  # for example "float32"
    precision: str  # "Exact" or "Fast", as LoadedModel.precision
    description: str  # LoadedModel.describe()

    @classmethod
    def of(cls, loaded: LoadedModel, fingerprint: WeightFingerprint | None) -> ModelIdentity:
        """Describe `loaded`. The sha256 stays None until a fingerprint is given."""
        identity = cls(
            name=loaded.name,
            folder=str(loaded.folder),
            sha256=None,
            sha256_source="not available",
            weight_files=[],
            device=loaded.device.type,
            dtype=loaded.dtype_name,
            precision=loaded.precision,
            description=loaded.describe(),
        )
        if fingerprint is not None:
            identity.set_fingerprint(fingerprint)
        return identity

    def set_fingerprint(self, fingerprint: WeightFingerprint) -> None:
        """Record the sha256 of the weights."""
        self.sha256 = fingerprint.sha256
        self.sha256_source = fingerprint.source
        self.weight_files = [
            {"name": entry.name, "size": entry.size, "sha256": entry.sha256, "source": entry.source}
            for entry in fingerprint.files
        ]


@dataclass
class PromptWindow:
    """The prompt given to the model: its token ids and the text they were cut from.

    The token ids are what the model saw. `text` is the text they were tokenized from (the
    pinned passages with their separators, then the text before the cursor from character
    `start` on), kept for people reading the record.
    """

    token_ids: list[int]
    start: int  # character offset in the text before the cursor where the window starts
    text_length: int  # characters of text before the cursor
    available: int  # positions the window could fill
    text: str
    # Document ranges of the pinned passages ahead of the text, as [start, end] pairs.
    pinned: list[list[int]] = field(default_factory=list)

    @classmethod
    def of(cls, prompt: Prompt, text_before_cursor: str) -> PromptWindow:
        """Describe `prompt`, which was built from `text_before_cursor`."""
        return cls(
            token_ids=list(prompt.ids),
            start=prompt.start,
            text_length=prompt.text_length,
            available=prompt.available,
            text=prompt.pinned_text + text_before_cursor[prompt.start : prompt.text_length],
            pinned=[[start, end] for start, end in prompt.pinned],
        )

    def to_prompt(self) -> Prompt:
        """Return the Prompt that `kl3m_desk.generation.stream_completion` takes."""
        return Prompt(
            ids=tuple(self.token_ids),
            available=self.available,
            text_length=self.text_length,
            start=self.start,
        )


@dataclass
class GenerationRecord:
    """Provenance of one inserted completion, and its review state."""

    model: ModelIdentity
    sampling: dict[str, Any]  # SamplingParams.to_mapping() as set, where a None seed means random
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=utc_timestamp)
    seed: int | None = None  # the seed the run used, or None when its result never arrived
    prompt: PromptWindow | None = None  # None when the run stopped before its prompt was reported
    # The generated text with the model's own line breaks. For a stopped run it is the part that
    # reached the document, which can be shorter than what `token_ids` decode to.
    text: str = ""
    # Characters of the run's text before `text`. Nonzero for a later part of an inline
    # suggestion that was accepted word by word or sentence by sentence.
    text_offset: int = 0
    token_ids: list[int] = field(default_factory=list)
    # A GenerationResult stop reason ("eos", "length", "stopped", "sentence", "paragraph",
    # "clause"), STOP_FAILED or STOP_UNKNOWN.
    stop_reason: str = STOP_UNKNOWN
    reviewed: bool = False
    reviewed_at: str | None = None  # ISO 8601 time of marking it reviewed

    def set_result(self, result: GenerationResult) -> None:
        """Store the seed, tokens and stop reason of the finished run.

        The text of a stopped run stays as it arrived, because the run may have generated tokens
        after the stop whose text never reached the document.
        """
        self.seed = result.seed
        self.token_ids = list(result.token_ids)
        self.stop_reason = result.stop_reason
        if result.stop_reason != "stopped":
            self.text = result.text

    def mark_reviewed(self, reviewed: bool = True) -> None:
        """Set the review state, recording the time when it becomes reviewed."""
        self.reviewed = reviewed
        self.reviewed_at = utc_timestamp() if reviewed else None

    def sampling_params(self) -> SamplingParams:
        """Return the sampling parameters with the seed the run used, to generate it again.

        Raises ValueError when the record has no seed or an invalid parameter.
        """
        if self.seed is None:
            raise ValueError(
                f"Generation record {self.id} has no seed, because the run's result never "
                "arrived. It cannot be generated again exactly."
            )
        return SamplingParams.from_mapping({**self.sampling, "seed": self.seed})

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "model": {
                "name": self.model.name,
                "folder": self.model.folder,
                "sha256": self.model.sha256,
                "sha256_source": self.model.sha256_source,
                "weight_files": self.model.weight_files,
                "device": self.model.device,
                "dtype": self.model.dtype,
                "precision": self.model.precision,
                "description": self.model.description,
            },
            "sampling": self.sampling,
            "seed": self.seed,
            "prompt": None
            if self.prompt is None
            else {
                "token_ids": self.prompt.token_ids,
                "start": self.prompt.start,
                "text_length": self.prompt.text_length,
                "available": self.prompt.available,
                "text": self.prompt.text,
                "pinned": self.prompt.pinned,
            },
            "generated": {
                "text": self.text,
                "offset": self.text_offset,
                "token_ids": self.token_ids,
                "stop_reason": self.stop_reason,
            },
            "reviewed": self.reviewed,
            "reviewed_at": self.reviewed_at,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> GenerationRecord:
        """Read a record written by `to_json`, raising ReviewFileError that names `where`."""
        record = _object(data, where)
        seed = record.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ReviewFileError(f"{where}: seed is {seed!r}, not a whole number or null.")
        prompt_data = record.get("prompt")
        prompt = None if prompt_data is None else _prompt_from_json(prompt_data, f"{where}, prompt")

        generated_where = f"{where}, generated"
        generated = _object(record.get("generated"), generated_where)
        reviewed_at = record.get("reviewed_at")
        return cls(
            id=_str(record, "id", where),
            created_at=_str(record, "created_at", where),
            model=_model_from_json(record.get("model"), f"{where}, model"),
            sampling=_object(record.get("sampling"), f"{where}, sampling"),
            seed=seed,
            prompt=prompt,
            text=_str(generated, "text", generated_where),
            text_offset=_int(generated, "offset", generated_where) if "offset" in generated else 0,
            token_ids=_int_list(generated, "token_ids", generated_where),
            stop_reason=_str(generated, "stop_reason", generated_where),
            reviewed=bool(record.get("reviewed", False)),
            reviewed_at=reviewed_at if isinstance(reviewed_at, str) else None,
        )


def _model_from_json(data: object, where: str) -> ModelIdentity:
    model = _object(data, where)
    weight_files = model.get("weight_files", [])
    if not isinstance(weight_files, list):
        raise ReviewFileError(f"{where}: weight_files is not a list.")
    sha256 = model.get("sha256")
    return ModelIdentity(
        name=_str(model, "name", where),
        folder=_str(model, "folder", where),
        sha256=sha256 if isinstance(sha256, str) else None,
        sha256_source=_str(model, "sha256_source", where),
        weight_files=[item for item in weight_files if isinstance(item, dict)],
        device=_str(model, "device", where),
        dtype=_str(model, "dtype", where),
        precision=_str(model, "precision", where),
        description=_str(model, "description", where),
    )


def _prompt_from_json(data: object, where: str) -> PromptWindow:
    prompt = _object(data, where)
    return PromptWindow(
        token_ids=_int_list(prompt, "token_ids", where),
        start=_int(prompt, "start", where),
        text_length=_int(prompt, "text_length", where),
        available=_int(prompt, "available", where),
        text=_str(prompt, "text", where),
        pinned=_ranges(prompt.get("pinned", []), f"{where}, pinned"),
    )


def _ranges(value: object, where: str) -> list[list[int]]:
    """Read a list of [start, end] pairs of whole numbers, as written for pinned ranges."""
    if not isinstance(value, list):
        raise ReviewFileError(f"{where} is not a list of [start, end] pairs.")
    ranges = []
    for item in value:
        valid = (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item)
            and item[0] <= item[1]
        )
        if not valid:
            raise ReviewFileError(f"{where}: {item!r} is not a [start, end] pair.")
        ranges.append([item[0], item[1]])
    return ranges


@dataclass
class PlacedPassage:
    """A generated passage in the document: its record, position and current text.

    `text` can differ from `record.text`, because the person may have edited the passage.
    """

    record: GenerationRecord
    start: int  # code point offset in the document text
    end: int
    text: str


@dataclass
class ReviewFile:
    """The records of one document: passages in the text and records that could not be placed."""

    document_sha256: str  # of the document text the positions refer to
    document_length: int  # in code points
    passages: list[PlacedPassage]
    # Records of passages that were not found in the text when the document was opened. They are
    # kept so that saving does not drop them.
    unplaced: list[GenerationRecord] = field(default_factory=list)
    # Passages pinned into every prompt (see kl3m_desk.context), in document order.
    pins: list[PinnedPassage] = field(default_factory=list)
    # The last value entered for each clause template field name in this document.
    field_values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_text(
        cls,
        text: str,
        passages: list[PlacedPassage],
        unplaced: list[GenerationRecord] | None = None,
    ) -> ReviewFile:
        """Return the records of `passages` in the document text `text`."""
        return cls(
            document_sha256=text_sha256(text),
            document_length=len(text),
            passages=sorted(passages, key=lambda passage: passage.start),
            unplaced=list(unplaced or []),
        )

    @property
    def records(self) -> list[GenerationRecord]:
        """Return every record: placed passages in document order, then unplaced ones."""
        return [passage.record for passage in self.passages] + self.unplaced

    def to_json(self, document_name: str) -> dict[str, Any]:
        """Return the file's JSON object for the document named `document_name`."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "saved_at": utc_timestamp(),
            "offsets": OFFSET_UNIT,
            "document": {
                "name": document_name,
                "characters": self.document_length,
                "sha256": self.document_sha256,
            },
            "passages": [
                {
                    "start": passage.start,
                    "end": passage.end,
                    "text": passage.text,
                    "record": passage.record.to_json(),
                }
                for passage in self.passages
            ],
            "unplaced": [record.to_json() for record in self.unplaced],
            "pinned": [
                {"start": pin.start, "end": pin.end, "text": pin.text}
                for pin in sorted(self.pins, key=lambda pin: pin.start)
            ],
            "field_values": dict(sorted(self.field_values.items())),
        }


def write_review_file(path: Path, review_file: ReviewFile, document_name: str) -> None:
    """Write `review_file` to `path` atomically, raising OSError on failure."""
    data = review_file.to_json(document_name)
    write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_review_file(path: Path) -> ReviewFile:
    """Read a file written by `write_review_file`, raising ReviewFileError when it is invalid."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ReviewFileError(
            f"The generation records {path} could not be read: {error.strerror or error}."
        ) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReviewFileError(
            f"The generation records {path} are not valid JSON ({error})."
        ) from error
    return parse_review_file(data, str(path))


def parse_review_file(data: object, where: str) -> ReviewFile:
    """Read the JSON object of a records file, raising ReviewFileError that names `where`."""
    root = _object(data, where)
    if root.get("format") != FILE_FORMAT:
        raise ReviewFileError(f'{where} is not a kl3m-desk records file: "format" is missing.')
    version = root.get("version")
    if version != FILE_VERSION:
        raise ReviewFileError(
            f"{where} has format version {version!r}, but this kl3m-desk reads version "
            f"{FILE_VERSION}. Open the document with the kl3m-desk version that saved it."
        )
    document = _object(root.get("document"), f"{where}, document")
    passages_data = root.get("passages", [])
    unplaced_data = root.get("unplaced", [])
    pinned_data = root.get("pinned", [])  # absent in files written before pins existed
    if not all(isinstance(data, list) for data in (passages_data, unplaced_data, pinned_data)):
        raise ReviewFileError(f"{where}: passages, unplaced and pinned must be lists.")

    passages = []
    for number, item in enumerate(passages_data, start=1):
        item_where = f"{where}, passage {number}"
        passage = _object(item, item_where)
        passages.append(
            PlacedPassage(
                record=GenerationRecord.from_json(passage.get("record"), f"{item_where}, record"),
                start=_int(passage, "start", item_where),
                end=_int(passage, "end", item_where),
                text=_str(passage, "text", item_where),
            )
        )
    unplaced = [
        GenerationRecord.from_json(item, f"{where}, unplaced record {number}")
        for number, item in enumerate(unplaced_data, start=1)
    ]
    field_values = root.get("field_values", {})  # absent in files written before field values
    if not isinstance(field_values, dict) or not all(
        isinstance(value, str) for value in field_values.values()
    ):
        raise ReviewFileError(f"{where}: field_values must be an object of strings.")
    pins = []
    for number, item in enumerate(pinned_data, start=1):
        item_where = f"{where}, pinned passage {number}"
        pin = _object(item, item_where)
        pins.append(PinnedPassage(_int(pin, "start", item_where), _str(pin, "text", item_where)))
    return ReviewFile(
        document_sha256=_str(document, "sha256", f"{where}, document"),
        document_length=_int(document, "characters", f"{where}, document"),
        passages=passages,
        unplaced=unplaced,
        pins=pins,
        field_values=dict(field_values),
    )


def load_records(path: Path) -> list[GenerationRecord]:
    """Return every record of a sidecar or exported records file, raising ReviewFileError."""
    return read_review_file(path).records


@dataclass
class Placement:
    """Positions of a records file's passages in a document's text."""

    passages: list[PlacedPassage]  # with positions in the current text
    unplaced: list[GenerationRecord]  # kept from the file, plus passages not found now
    newly_unplaced: int  # passages of the file that were not found in the text
    relocated: int  # passages found by their text at another position
    text_changed: bool  # the text differs from the one the file was saved with


def place_passages(review_file: ReviewFile, text: str) -> Placement:
    """Find the passages of `review_file` in the document text `text`.

    A passage stays where it was saved when its text is still there. Otherwise it goes to the
    occurrence of its text nearest its old start that no other passage covers, which finds it
    again after the file was edited elsewhere. A passage whose text is not found is unplaced.
    """
    placed: list[PlacedPassage] = []
    unplaced = list(review_file.unplaced)
    newly_unplaced = 0
    relocated = 0
    for passage in sorted(review_file.passages, key=lambda item: item.start):
        if not passage.text:
            unplaced.append(passage.record)
            newly_unplaced += 1
            continue
        start = passage.start
        in_place = start >= 0 and text[start : passage.end] == passage.text
        if not in_place or _overlaps(placed, start, passage.end):
            found = _nearest_free_occurrence(text, passage.text, start, placed)
            if found is None:
                unplaced.append(passage.record)
                newly_unplaced += 1
                continue
            start = found
            relocated += 1
        placed.append(PlacedPassage(passage.record, start, start + len(passage.text), passage.text))
        placed.sort(key=lambda item: item.start)
    return Placement(
        passages=placed,
        unplaced=unplaced,
        newly_unplaced=newly_unplaced,
        relocated=relocated,
        text_changed=text_sha256(text) != review_file.document_sha256,
    )


def place_pins(pins: list[PinnedPassage], text: str) -> tuple[list[PinnedPassage], int]:
    """Find the pinned passages of a records file in the document text `text`.

    A passage stays where it was saved when its text is still there, and otherwise goes to the
    occurrence of its text nearest its old start. Returns the passages found and how many were
    not found.
    """
    placed: list[PinnedPassage] = []
    missing = 0
    for pin in pins:
        if not pin.text:
            continue
        if text[pin.start : pin.end] == pin.text:
            placed.append(pin)
            continue
        found = _nearest_free_occurrence(text, pin.text, pin.start, [])
        if found is None:
            missing += 1
        else:
            placed.append(PinnedPassage(found, pin.text))
    return placed, missing


def _overlaps(placed: list[PlacedPassage], start: int, end: int) -> bool:
    return any(start < other.end and other.start < end for other in placed)


def _nearest_free_occurrence(
    text: str, needle: str, near: int, placed: list[PlacedPassage]
) -> int | None:
    best: int | None = None
    found = text.find(needle)
    while found != -1:
        free = not _overlaps(placed, found, found + len(needle))
        if free and (best is None or abs(found - near) < abs(best - near)):
            best = found
        found = text.find(needle, found + 1)
    return best


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReviewFileError(f"{where} is not a JSON object.")
    return value


def _str(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ReviewFileError(f"{where}: {key} is {value!r}, not a string.")
    return value


def _int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReviewFileError(f"{where}: {key} is {value!r}, not a whole number of 0 or more.")
    return value


def _int_list(data: dict[str, Any], key: str, where: str) -> list[int]:
    value = data.get(key)
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise ReviewFileError(f"{where}: {key} is not a list of whole numbers.")
    return list(value)
