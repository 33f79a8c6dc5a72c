"""Generation records without a window: offsets, placement, records files and weight sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import kl3m_desk.fingerprint as fingerprint
from kl3m_desk.download import RECORD_FILE as DOWNLOAD_RECORD_FILE
from kl3m_desk.fingerprint import WeightHasher, fingerprint_weights
from kl3m_desk.manifest import write_manifest
from kl3m_desk.model import LoadedModel
from kl3m_desk.params import SamplingParams
from kl3m_desk.review import (
    GenerationRecord,
    ModelIdentity,
    OffsetMap,
    PlacedPassage,
    ReviewFile,
    ReviewFileError,
    load_records,
    place_passages,
    read_review_file,
    sidecar_path,
    write_review_file,
)

CLAUSE = "This Agreement shall be governed by the laws of the State of Delaware. "
GENERATED = "Each party submits to the courts of Wilmington."


def make_record(tiny_model: LoadedModel, text: str = GENERATED) -> GenerationRecord:
    record = GenerationRecord(
        model=ModelIdentity.of(tiny_model, None),
        sampling=SamplingParams.defaults().to_mapping(),
    )
    record.text = text
    return record


def file_with(text: str, passages: list[tuple[int, str, GenerationRecord]]) -> ReviewFile:
    placed = [
        PlacedPassage(record, start, start + len(passage), passage)
        for start, passage, record in passages
    ]
    return ReviewFile.for_text(text, placed)


def test_offset_map_astral_characters() -> None:
    text = "a🙂b東c🙂"
    offsets = OffsetMap(text)
    expected_utf16 = [0, 1, 3, 4, 5, 6, 8]
    for code_point, utf16 in enumerate(expected_utf16):
        assert offsets.to_utf16(code_point) == utf16
        assert offsets.to_code_point(utf16) == code_point


def test_sidecar_path_beside_document() -> None:
    assert sidecar_path(Path("/drafts/contract.txt")) == Path("/drafts/contract.txt.kl3m.json")


def test_placement_unchanged_text(tiny_model: LoadedModel) -> None:
    text = CLAUSE + GENERATED
    review_file = file_with(text, [(len(CLAUSE), GENERATED, make_record(tiny_model))])
    placement = place_passages(review_file, text)
    assert not placement.text_changed
    assert placement.relocated == 0
    assert placement.newly_unplaced == 0
    assert [(item.start, item.end) for item in placement.passages] == [
        (len(CLAUSE), len(CLAUSE) + len(GENERATED))
    ]


def test_placement_after_outside_edit(tiny_model: LoadedModel) -> None:
    kept, lost = make_record(tiny_model), make_record(tiny_model, "Lost words.")
    saved_text = CLAUSE + GENERATED + " Lost words."
    review_file = file_with(
        saved_text,
        [(len(CLAUSE), GENERATED, kept), (len(CLAUSE + GENERATED) + 1, "Lost words.", lost)],
    )
    edited = "Preamble added elsewhere. " + CLAUSE + GENERATED + " Other words."
    placement = place_passages(review_file, edited)
    assert placement.text_changed
    assert placement.relocated == 1
    assert placement.newly_unplaced == 1
    assert placement.unplaced == [lost]
    [found] = placement.passages
    assert found.record is kept
    assert edited[found.start : found.end] == GENERATED


def test_placement_picks_nearest_occurrence(tiny_model: LoadedModel) -> None:
    repeated = "Time is of the essence. "
    saved_text = repeated + CLAUSE + repeated
    record = make_record(tiny_model, repeated)
    review_file = file_with(saved_text, [(len(repeated + CLAUSE), repeated, record)])
    edited = repeated + "Inserted. " + CLAUSE + repeated
    [found] = place_passages(review_file, edited).passages
    assert found.start == len(repeated + "Inserted. " + CLAUSE)


def test_records_file_round_trip(tiny_model: LoadedModel, tmp_path: Path) -> None:
    record = make_record(tiny_model)
    record.seed = 7
    record.token_ids = [5, 6, 7]
    record.stop_reason = "length"
    record.mark_reviewed()
    unplaced = make_record(tiny_model, "Unplaced.")
    text = CLAUSE + GENERATED
    review_file = ReviewFile.for_text(
        text, [PlacedPassage(record, len(CLAUSE), len(text), GENERATED)], [unplaced]
    )
    path = tmp_path / "contract.txt.kl3m.json"
    write_review_file(path, review_file, "contract.txt")

    again = read_review_file(path)
    assert again == review_file
    assert [item.id for item in load_records(path)] == [record.id, unplaced.id]
    assert again.passages[0].record.reviewed_at is not None
    assert again.passages[0].record.sampling_params().seed == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"format": "other"}', "not a kl3m-desk records file"),
        ('{"format": "kl3m-desk generation records", "version": 99}', "format version 99"),
        (
            '{"format": "kl3m-desk generation records", "version": 1, "document": '
            '{"sha256": "x", "characters": 3}, "passages": [{"start": "a"}]}',
            "passage 1",
        ),
    ],
)
def test_invalid_records_file_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.kl3m.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReviewFileError, match=message) as raised:
        read_review_file(path)
    assert str(path) in str(raised.value)


def test_record_without_seed_not_repeatable(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="has no seed"):
        make_record(tiny_model).sampling_params()


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def no_read(*_args: object, **_kwargs: object) -> str:
    raise AssertionError("a weight file was read although its sha256 was known")


def test_fingerprint_computed_once(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = model_copy / "model.safetensors"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    first = fingerprint_weights(model_copy)
    assert first.sha256 == expected
    assert first.source == fingerprint.COMPUTED

    monkeypatch.setattr(fingerprint, "sha256_of", no_read)
    second = fingerprint_weights(model_copy)
    assert second.sha256 == expected
    assert second.source == fingerprint.FROM_CACHE


def test_fingerprint_recomputed_after_change(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    fingerprint_weights(model_copy)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    before = weights.stat().st_mtime_ns
    weights.write_bytes(bytes(data))
    # The size stays the same, so the cache notices the change only through the modification
    # time. Some file systems store it in whole seconds, so the test moves it on explicitly.
    os.utime(weights, ns=(before + 2_000_000_000, before + 2_000_000_000))
    changed = fingerprint_weights(model_copy)
    assert changed.sha256 == hashlib.sha256(bytes(data)).hexdigest()
    assert changed.source == fingerprint.COMPUTED


def test_fingerprint_uses_manifest(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(model_copy, name="kl3m-tiny")
    manifest = json.loads((model_copy / "kl3m-desk-manifest.json").read_text(encoding="utf-8"))
    monkeypatch.setattr(fingerprint, "sha256_of", no_read)
    result = fingerprint_weights(model_copy)
    assert result.sha256 == manifest["files"]["model.safetensors"]["sha256"]
    assert result.source == fingerprint.FROM_MANIFEST


def test_fingerprint_skips_outdated_record(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    record = {"files": {"model.safetensors": {"size": 1, "sha256": "0" * 64}}}
    (model_copy / DOWNLOAD_RECORD_FILE).write_text(json.dumps(record), encoding="utf-8")
    result = fingerprint_weights(model_copy)
    assert result.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert result.source == fingerprint.COMPUTED


def test_hasher_runs_in_background(model_copy: Path) -> None:
    hasher = WeightHasher()
    assert hasher.fingerprint(model_copy) is None  # never requested
    hasher.request(model_copy)
    result = hasher.fingerprint(model_copy, timeout=60)
    assert result is not None
    assert result.sha256 == fingerprint_weights(model_copy).sha256
