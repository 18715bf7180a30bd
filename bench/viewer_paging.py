"""How the viewer's list stays fast as a run grows: page latency at the start and deep in a large
synthetic run, with and without filters and search, and how fast the catalog is built.

    python bench/viewer_paging.py --quick          # 20,000 samples
    python bench/viewer_paging.py --rows 1000000   # the issue's million (several GB of disk)

Samples are copies of one real offline Trace with varied ids, statuses, tools and words, written
straight into a run store. Each query is timed as the median of several runs; the target column
is what a page click should cost to feel instant.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mmat_core.store import RunStore
from mmat_plugins.viewer.catalog import Catalog, Filters
from mmat_plugins.viewer.dataset import Dataset

TARGET_MS = 100.0
WORDS = ["harbour", "lantern", "orchid", "granite", "violet", "saffron", "meadow", "copper", "falcon", "quartz"]


def template() -> dict:
    """One real trace from a tiny offline run (no model, a few seconds)."""
    from mmat_core.pipeline import Pipeline

    out = Path(tempfile.mkdtemp(prefix="mmat-bench-viewer-src-"))
    try:
        Pipeline(source={"name": "sample", "limit": 1}, llm="offline", tools=["ocr", "image_caption"], search=False,
                 critics=["answer_match"], formatters=[]).run(out)
        store = RunStore.open(out)
        trace = next(store.traces()).model_dump(mode="json")
        store.close()
        return trace
    finally:
        shutil.rmtree(out, ignore_errors=True)


def build_store(path: Path, rows: int, trace: dict) -> None:
    """``rows`` varied copies of ``trace`` in a run store, in batches."""
    rng = random.Random(0)
    store = RunStore(path)
    db = store.connection()
    statuses = ["kept"] * 80 + ["reflected"] * 12 + ["dropped"] * 6 + ["failed"] * 2
    tools = [["ocr"], ["image_caption"], ["ocr", "image_caption"], ["face_detection"]]
    batch = []
    for seq in range(1, rows + 1):
        status = rng.choice(statuses)
        used = tools[0] if seq % 1000 else tools[3]  # face_detection is rare: one sample in a thousand
        word = WORDS[seq % len(WORDS)] + (" zephyr" if seq % 5000 == 0 else "")
        trace["id"] = f"bench/{seq}"
        trace["sample"]["question"] = f"Question {seq} about the {word}?"
        trace["status"] = status
        trace["steps"][0]["tool_calls"][0]["name"] = used[0]
        trace["steps"][0]["thought"] = f"Looking at the {word} carefully."
        batch.append((seq, trace["id"], "bench", f"part{seq % 7}", status, "answer_match: mismatch" if status == "dropped" else None,
                      ",".join(used), trace["sample"]["question"], "general" if status == "reflected" else "", 0.001, json.dumps(trace)))
        if len(batch) == 5000:
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT INTO samples(seq, id, source, subset, status, failure, tools, question, reflected_by, cost, trace) "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch.clear()
    if batch:
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT INTO samples(seq, id, source, subset, status, failure, tools, question, reflected_by, cost, trace) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
    store.close()


def timed(fn, repeat: int = 5) -> float:
    """Median milliseconds of ``fn()``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 samples")
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    rows = 20_000 if args.quick else args.rows
    work = Path(tempfile.mkdtemp(prefix="mmat-bench-viewer-"))
    try:
        build_store(work / "run.sqlite", rows, template())
        dataset = Dataset.open(work)
        catalog = Catalog(dataset, work / "index")
        store_first = timed(lambda: catalog.page(Filters()))
        store_tool = timed(lambda: catalog.page(Filters(tool="face_detection")), repeat=1)
        start = time.perf_counter()
        catalog.refresh()
        build_s = time.perf_counter() - start
        deep = rows - 100
        figures = {
            "first_page_ms": timed(lambda: catalog.page(Filters())),
            "deep_page_ms": timed(lambda: catalog.page(Filters(), after=deep)),
            "status_filter_ms": timed(lambda: catalog.page(Filters(status="reflected"), after=deep // 2)),
            "rare_tool_filter_ms": timed(lambda: catalog.page(Filters(tool="face_detection"))),
            "rare_word_search_ms": timed(lambda: catalog.page(Filters(q="zephyr"))),
            "common_word_search_ms": timed(lambda: catalog.page(Filters(q="harbour"))),
            "search_and_status_ms": timed(lambda: catalog.page(Filters(q="lantern", status="dropped"))),
            "sample_view_ms": timed(lambda: __import__("mmat_plugins.viewer.dataset", fromlist=["x"]).sample_view(dataset, deep)),
            "dashboard_ms": timed(lambda: catalog._dashboard(), repeat=1),
        }
        print(f"viewer paging on {rows:,} samples (catalog built at {rows / build_s:,.0f} samples/s, {build_s:.1f} s)")
        print(f"{'query':28} {'ms':>10} {'target':>10}")
        print(f"{'(store) first page':28} {store_first:10.1f} {TARGET_MS:10.0f}")
        print(f"{'(store) rare tool, no index':28} {store_tool:10.1f} {'-':>10}")
        for name, value in figures.items():
            target = "-" if name == "dashboard_ms" else f"{TARGET_MS:.0f}"
            print(f"{name.removesuffix('_ms'):28} {value:10.1f} {target:>10}")
        catalog.close()
        dataset.close()
        result = {"rows": rows, "catalog_rows_per_s": round(rows / build_s), "store_rare_tool_ms": round(store_tool, 1),
                  **{k: round(v, 1) for k, v in figures.items()}}
        print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
