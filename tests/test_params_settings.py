"""Sampling parameter declarations and the settings file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kl3m_desk import paths
from kl3m_desk.params import PARAMETERS, PARAMETERS_BY_NAME, SamplingParams
from kl3m_desk.settings import Settings


def test_defaults_come_from_declarations() -> None:
    defaults = SamplingParams.defaults()
    for spec in PARAMETERS:
        assert getattr(defaults, spec.name) == spec.default


def test_out_of_range_pulled_into_range() -> None:
    params = SamplingParams.from_mapping(
        {"temperature": 7, "top_p": 0, "top_k": -3, "max_new_tokens": 0, "repetition_penalty": 0.5}
    )
    assert params.temperature == 2.0
    assert params.top_p == 0.01
    assert params.top_k == 0
    assert params.max_new_tokens == 1
    assert params.repetition_penalty == 1.0


def test_zero_values_kept() -> None:
    params = SamplingParams.from_mapping({"temperature": 0, "top_k": 0})
    assert params.temperature == 0.0
    assert params.greedy
    assert params.top_k == 0


def test_invalid_value_names_parameter() -> None:
    with pytest.raises(ValueError, match="Temperature must be a number"):
        SamplingParams.from_mapping({"temperature": "warm"})
    with pytest.raises(ValueError, match="Top p must be a finite number"):
        SamplingParams.from_mapping({"top_p": float("nan")})
    with pytest.raises(ValueError, match="Max new tokens is empty"):
        SamplingParams.from_mapping({"max_new_tokens": ""})


def test_blank_seed_means_random() -> None:
    assert SamplingParams.from_mapping({"seed": ""}).seed is None
    assert SamplingParams.from_mapping({"seed": "42"}).seed == 42
    assert PARAMETERS_BY_NAME["seed"].optional


def test_settings_round_trip(tmp_path: Path) -> None:
    settings = Settings.load()
    settings.sampling = SamplingParams.defaults().replace(top_k=0, top_p=0.05, seed=9)
    settings.last_model_dir = tmp_path / "modèle de test"
    settings.save()
    loaded = Settings.load()
    assert loaded.sampling == settings.sampling
    assert loaded.last_model_dir == settings.last_model_dir
    assert loaded.path.parent == paths.config_dir()
    assert loaded.load_warnings == []


def test_invalid_json_kept_and_reported() -> None:
    path = paths.config_dir() / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"sampling": {"temperature": 0.7', encoding="utf-8")
    settings = Settings.load()
    assert settings.sampling == SamplingParams.defaults()
    assert len(settings.load_warnings) == 1
    assert "not valid JSON" in settings.load_warnings[0]
    copies = list(path.parent.glob("settings.json.invalid-*"))
    assert len(copies) == 1
    assert copies[0].read_text(encoding="utf-8") == '{"sampling": {"temperature": 0.7'


def test_wrong_types_fall_back_per_value() -> None:
    path = paths.config_dir() / "settings.json"
    path.parent.mkdir(parents=True)
    data = {"sampling": {"temperature": "hot", "top_k": 5000, "top_p": 0.3}, "last_model_dir": 12}
    path.write_text(json.dumps(data), encoding="utf-8")
    settings = Settings.load()
    assert settings.sampling.temperature == PARAMETERS_BY_NAME["temperature"].default
    assert settings.sampling.top_k == 1000
    assert settings.sampling.top_p == pytest.approx(0.3)
    assert settings.last_model_dir is None
    assert len(settings.load_warnings) == 4  # three values, then where the copy is kept
    assert "Temperature" in settings.load_warnings[0]
    assert "Top k 5000" in settings.load_warnings[1]
    assert "last model folder" in settings.load_warnings[2]
    copies = list(path.parent.glob("settings.json.invalid-*"))
    assert len(copies) == 1
    assert json.loads(copies[0].read_text(encoding="utf-8")) == data
    assert str(copies[0]) in settings.load_warnings[3]
    assert Settings.load().load_warnings == []  # the file was rewritten


def test_precision_setting_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    settings = Settings(path=path)
    assert settings.precision == "fast"
    settings.precision = "exact"
    settings.save()
    assert Settings.load(path).precision == "exact"

    path.write_text(json.dumps({"dtype": "float32"}), encoding="utf-8")
    assert Settings.load(path).precision == "exact"
    path.write_text(json.dumps({"dtype": "bfloat16"}), encoding="utf-8")
    assert Settings.load(path).precision == "fast"

    path.write_text(json.dumps({"precision": "turbo"}), encoding="utf-8")
    loaded = Settings.load(path)
    assert loaded.precision == "fast"
    assert "precision setting 'turbo'" in loaded.load_warnings[0]
    assert '"fast" is used' in loaded.load_warnings[0]
