"""`mmat build --recipe paper` end to end against fakes: the scripted VLM (an OpenAI-compatible
server), a fake Google search, a tiny Grounding DINO built from a config, and the five
collections as tiny copies in their published layouts. The final turn is the label for every
kept sample, and the label costs no model call: one call fewer per sample than
``final_answer: model``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.critics.judges import GENERAL_PROMPT, MATH_PROMPT, QUALITY_PROMPT

from mmat_core.config import load_config
from mmat_core.pipeline import Pipeline
from tests.fakes.search_servers import API_KEY, ENGINE_ID, FakeSearchServers
from tests.fakes.vlm_server import FakeVLM, Recorded, step
from tests.sources import fixtures
from tests.tools.conftest import build_tiny_grounding_dino

#: What every sample's generator does: all four operators and a web search, then the end.
STEPS = [step("I will look at the image with every operator and search for the landmark.",
              ["image_caption", "label_bbox", "ocr", "face_detection"], rag="tower in paris"),
         step("The observations settle the question.", final=True)]
#: The judges' verdicts: clean dialogues, nothing skipped, a good quality score.
VERDICTS = ((GENERAL_PROMPT[:60], "critic_general", "{}"),
            (MATH_PROMPT[:60], "critic_math", json.dumps({"reason": "", "thought": "null"})),
            (QUALITY_PROMPT[:60], "critic_quality",
             json.dumps({"quality_score": 0.9, "scoring_reason": "coherent and grounded"})))


#: Two of the paper's ten Cauldron sub-datasets (the build reads only these: source[2].subsets).
CAULDRON = {
    "vistext": [{"images": [fixtures.chart({"2019": 4, "2020": 9}, "Revenue")], "texts": [
        {"user": "Which year had the higher revenue?\nAnswer the question using a single word or phrase.",
         "assistant": "2020", "source": "VisText"}]}],
    "tqa": [{"images": [fixtures.photo("coffee")], "texts": [
        {"user": "What drink is in the cup?", "assistant": "coffee", "source": "TQA"}]}],
}


class JudgingVLM(FakeVLM):
    """The scripted fake VLM that also answers the three critics' prompts."""

    def answer(self, body: dict[str, Any]) -> tuple[int, str, dict[str, Any], str | None, str]:
        """A judge's verdict for a critic prompt; otherwise the scripted generator's reply."""
        messages = [{"role": m.get("role"), "text": m["content"] if isinstance(m.get("content"), str) else
                     "".join(p.get("text", "") for p in m.get("content") or [] if p.get("type") == "text")}
                    for m in body.get("messages", [])]
        last_user = next((m["text"] for m in reversed(messages) if m["role"] == "user"), "")
        for marker, purpose, reply in VERDICTS:
            if marker in last_user:
                with self._lock:
                    self.requests.append(Recorded(None, purpose, str(body.get("model", "")), messages, 0, 200, reply))
                    self.completions += 1
                return 200, reply, {}, None, purpose
        return super().answer(body)


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The five collections in their real layouts, and the tiny detector."""
    root = tmp_path_factory.mktemp("paper-data")
    return {"visual_cot": fixtures.visual_cot(root / "visual_cot"), "llava_cot": fixtures.llava_cot(root / "llava_cot"),
            "cauldron": fixtures.cauldron(root / "cauldron", CAULDRON), "tabmwp": fixtures.tabmwp(root / "tabmwp"),
            "infoseek": fixtures.infoseek(root / "infoseek"), "detector": build_tiny_grounding_dino(root / "detector")}


def settings(data: dict[str, Path], vlm: FakeVLM, search: FakeSearchServers) -> list[str]:
    """The --set flags that point the paper recipe at the fakes and the fixtures."""
    pairs = {
        "source[0].path": data["visual_cot"], "source[1].path": data["llava_cot"], "source[2].path": data["cauldron"], "source[2].subsets": "[vistext, tqa]",
        "source[3].path": data["tabmwp"], "source[4].path": data["infoseek"],
        "source[4].image_map": data["infoseek"] / "image_map.jsonl",
        "llm.base_url": vlm.base_url, "llm.api_key_env": "null", "llm.model": "fake-vlm",
        "search.options.google.endpoint": search.url("/customsearch/v1"), "search.options.google.engine_id": ENGINE_ID,
        "tools[1].detector.model": data["detector"], "tools[1].detector.threshold": 0.0,
        "tools[1].detector.text_threshold": 0.0, "tools[1].detector.local_files_only": "true",
    }
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


def build(out: Path, flags: list[str]) -> subprocess.CompletedProcess[str]:
    """`mmat build --recipe paper` in a subprocess whose only search key is Google's (for the fake)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_CSE_ID"))}
    env.update(GOOGLE_API_KEY=API_KEY, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", "from mmat_core.cli import run; run()", "build", "--recipe", "paper",
                           "--out", str(out), *flags], check=False, capture_output=True, text=True, timeout=600, env=env)


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    """The records of both paper-named files of one format (train and validation)."""
    suffix = "RR_sys" if kind == "rr" else "ORR"
    rows = []
    for split in ("train", "val"):
        path = out / f"dataset_qa_rr_{split}_all_{suffix}.jsonl"
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


@pytest.fixture(scope="module")
def runs(collections: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The paper recipe built twice, with the label and with the model as the final answer."""
    from mmat_plugins.sources.infoseek import InfoSeekOptions

    if "mix" not in InfoSeekOptions.model_fields:
        pytest.skip("the paper recipe's InfoSeek entry needs the source's `mix: paper` (issue 14 item 4)")
    out = tmp_path_factory.mktemp("paper-runs")
    result: dict[str, Any] = {}
    with FakeSearchServers() as search:
        for mode in ("label", "model"):
            with JudgingVLM(default_steps=STEPS, default_answer="model says") as vlm:
                flags = settings(collections, vlm, search) + ["--set", f"engine.final_answer={mode}"]
                done = build(out / mode, flags)
                assert done.returncode == 0, done.stderr[-3000:]
                result[mode] = {"out": out / mode, "calls": vlm.completions, "stdout": done.stdout,
                                "purposes": [r.purpose for r in vlm.requests], "flags": flags}
        result["searches"] = [r for r in search.requests if r.route == "/customsearch/v1"]
    return result


def labels(collections: dict[str, Path], flags: list[str]) -> dict[str, str]:
    """Sample id -> the dataset's label, read from the sources as the build reads them."""
    import yaml

    pairs = [flags[i + 1].split("=", 1) for i in range(0, len(flags), 2)]
    overrides = {key: yaml.safe_load(value) for key, value in pairs if key.startswith("source")}
    config = load_config(None, overrides, recipe="paper")
    pipeline = Pipeline(source=[s.model_dump() for s in config.sources], llm="offline", tools=[], critics=[],
                        formatters=[], search=False)
    return {sample.id: sample.answer for sample in pipeline.iter_samples() if hasattr(sample, "answer")}


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text())


def test_every_collection_yields_kept_samples(runs: dict[str, Any]) -> None:
    kept = manifest(runs["label"]["out"])["yield_by_source"]
    for source in ("visual_cot", "llava_cot", "cauldron", "tabmwp", "infoseek"):
        assert kept[source]["kept"] > 0, source


def test_rr_final_turn_is_the_label_for_every_kept_sample(runs: dict[str, Any], collections: dict[str, Path]) -> None:
    truth = labels(collections, runs["label"]["flags"])
    rows = records(runs["label"]["out"], "rr")
    assert len(rows) == manifest(runs["label"]["out"])["counts"]["kept"] > 0
    for row in rows:
        assert row["messages"][-1] == {"role": "assistant", "content": truth[row["id"]]}


def test_orr_answer_is_the_label_for_every_kept_sample(runs: dict[str, Any], collections: dict[str, Path]) -> None:
    truth = labels(collections, runs["label"]["flags"])
    for row in records(runs["label"]["out"], "orr"):
        assert row["messages"][-1]["content"].endswith(f"<ANSWER>The answer is: {truth[row['id']]}</ANSWER>")


def test_the_label_saves_one_model_call_per_sample(runs: dict[str, Any]) -> None:
    finished = manifest(runs["label"]["out"])["counts"]["finished"]
    assert finished == manifest(runs["model"]["out"])["counts"]["finished"] > 0
    assert runs["model"]["calls"] - runs["label"]["calls"] == finished
    assert "final_answer" not in runs["label"]["purposes"]
    assert runs["model"]["purposes"].count("final_answer") == finished


def test_all_four_operators_and_web_rag_run_for_every_sample(runs: dict[str, Any]) -> None:
    rows = records(runs["label"]["out"], "rr")
    for row in rows:
        text = "\n".join(m["content"] for m in row["messages"] if m["role"] == "user")
        for label in ("image caption", "label bbox", "ocr", "face detection"):
            assert f"Here are {label} results" in text, (label, row["id"])
        assert "Eiffel Tower" in text
    assert len(runs["searches"]) >= 1 and all(r.query["cx"] == ENGINE_ID for r in runs["searches"])


def test_the_critics_are_the_papers_three(runs: dict[str, Any]) -> None:
    purposes = set(runs["label"]["purposes"])
    assert {"critic_general", "critic_quality", "critic_math"} <= purposes
    assert [c["name"] for c in manifest(runs["label"]["out"])["components"]["critics"]] == ["general", "math", "quality"]


def test_the_summary_names_no_missing_operator(runs: dict[str, Any]) -> None:
    assert "paper:" not in runs["label"]["stdout"]
