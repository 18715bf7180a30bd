"""Bad configuration stops before any work with one message naming the file, the key and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.config import load_config
from mmat_core.errors import ConfigError
from mmat_core.pipeline import Pipeline


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_top_level_key_names_file_key_and_allowed_keys(tmp_path: Path) -> None:
    config = write(tmp_path / "build.yaml", "sourc: sample\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(config)
    message = str(excinfo.value)
    assert str(config) in message and "sourc: unknown key" in message
    assert "allowed: critics, curation, engine" in message


def test_unknown_nested_key_lists_the_section_keys(tmp_path: Path) -> None:
    config = write(tmp_path / "build.toml", "[engine]\nmax_turn = 3\n")
    with pytest.raises(ConfigError, match=r"engine.max_turn: unknown key; allowed: .*max_turns"):
        load_config(config)


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    config = write(tmp_path / "build.yaml", "engine:\n  max_turns: many\n")
    with pytest.raises(ConfigError, match=r"engine.max_turns: .*'many'"):
        load_config(config)


def test_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"nowhere.yaml: file not found"):
        load_config("nowhere.yaml")


def test_unknown_component_suggests_and_lists(tmp_path: Path) -> None:
    config_path = write(tmp_path / "build.yaml", "tools: [ocr, face_detect]\n")
    config = load_config(config_path)
    with pytest.raises(ConfigError) as excinfo:
        Pipeline.from_config(config, config_file=str(config_path))
    message = str(excinfo.value)
    assert "tools[1].name" in message and "Did you mean 'face_detection'?" in message and "Available:" in message


def test_unknown_component_option_lists_the_allowed_options(tmp_path: Path) -> None:
    config_path = write(tmp_path / "build.yaml", "tools:\n  - {name: ocr, max_sid: 10}\n")
    with pytest.raises(ConfigError, match=r"tools\[0\].max_sid: unknown key; allowed: .*\bmax_side\b"):
        Pipeline.from_config(load_config(config_path), config_file=str(config_path))


def test_cli_reports_config_errors_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    config = write(tmp_path / "build.yaml", "llm: {name: offline, temprature: 0.2}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["build", "--config", str(config), "--out", str(out)], standalone_mode=True)
    assert result.exit_code != 0
    assert "temprature" in str(result.exception) or "temprature" in result.output
    assert not out.exists()


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    from mmat_core.cli.build import collect_overrides

    config = write(tmp_path / "build.yaml", "llm: {name: offline}\nengine: {max_turns: 3}\nout: a\n")
    loaded = load_config(config, collect_overrides(out=tmp_path / "b", set_items=("engine.max_turns=5",), tools="ocr"))
    assert loaded.engine.max_turns == 5 and loaded.out == str(tmp_path / "b")
    assert [t.name for t in loaded.tools] == ["ocr"]


def test_config_fingerprint_ignores_the_output_directory() -> None:
    assert load_config(None, {"out": "x"}).fingerprint() == load_config(None, {"out": "y"}).fingerprint()


def test_set_reaches_list_items_by_index() -> None:
    config = load_config(None, {"critics.0.threshold": 0.8, "tools[1].max_side": 640})
    assert config.critics[0].name == "answer_match" and config.critics[0].options == {"threshold": 0.8}
    assert config.tools[1].name == "ocr" and config.tools[1].options == {"max_side": 640}


def test_set_on_a_missing_component_section_starts_from_its_default() -> None:
    config = load_config(None, {"llm.model": "offline-x"})
    assert config.llm.name == "offline" and config.llm.options == {"model": "offline-x"}


def test_set_on_a_component_named_alone_keeps_its_name(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "b.yaml", "llm: offline\n"), {"llm.model": "m"})
    assert config.llm.name == "offline" and config.llm.options == {"model": "m"}


def test_search_is_on_by_default_only_for_the_bundled_sample() -> None:
    assert load_config(None).search is not None
    assert load_config(None, {"source": {"name": "jsonl", "path": "x.jsonl"}}).search is None
    assert load_config(None, {"source": {"name": "jsonl", "path": "x"}, "search": {"name": "local"}}).search.name == "local"


def test_a_pipeline_given_other_sources_in_code_has_no_search_unless_asked(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("")
    assert Pipeline(source={"name": "jsonl", "path": str(data)}).search is None
    assert Pipeline(source={"name": "jsonl", "path": str(data)}, search="local").search.name == "local"
    assert Pipeline().search is not None  # the bundled sample keeps its corpus


def test_every_problem_is_reported_at_once_with_suggestions(tmp_path: Path) -> None:
    config = write(tmp_path / "build.yaml", "sorce: sample\ncuration:\n  limt: 3\nllm:\n  name: offline\n  modle: x\n"
                                            "tools:\n  - name: ocr\n    max_sid: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(config)
    message = str(excinfo.value)
    assert message.startswith(f"{config}: 4 problems:")
    assert "sorce: unknown key; allowed: " in message and "did you mean 'source'?" in message
    assert "curation.limt: unknown key" in message and "did you mean 'limit'?" in message
    assert "llm.modle: unknown key; allowed: model; did you mean 'model'?" in message
    assert "tools[0].max_sid: unknown key" in message and "did you mean 'max_side'?" in message
    assert len(excinfo.value.problems) == 4  # type: ignore[attr-defined]


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_bytes(b"llm: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"build.yaml: not UTF-8 text"):
        load_config(config)


def test_a_config_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a regular file"):
        load_config(tmp_path)
