"""Benchmark: export stored Traces to RR and ORR JSONL (issue 7).

Generates N Traces (default 1,000,000; ``--quick`` 50,000) into a real RunStore, then exports them
with ``mmat_core.exporter.export_run`` to RR and to ORR, each in a fresh process so its peak
memory (ru_maxrss) is its own. Also measures, in the same process on a sample, the pydantic path
(``Trace.model_validate_json`` then formatting the model) against the dict path, and checks
that both write the same bytes.

Targets: >= 50,000 samples/s per format on 2 cores, peak memory < 500 MB.

The Hugging Face case (``--only hf`` runs it alone) prices the ``hf_dataset`` default, images
embedded in the parquet, against ``images=path``: M traces (default 20,000; ``--quick`` 2,000),
each with its own JPEG of about 60 KB on disk, exported both ways in fresh processes (rate,
output size, peak memory). Embedding reads, hashes and copies every image; path mode writes
the path only. Issue 19 sets no speed target for it (the figure is stated); peak memory < 500 MB
either way.

    .venv/bin/python bench/export.py --quick
    .venv/bin/python bench/export.py --n 1000000 --dir /tmp/mmat-bench-export
    .venv/bin/python bench/export.py --quick --only hf
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_RATE = 50_000
TARGET_MB = 500


def template_traces() -> list[Any]:
    """A handful of realistic Traces (OCR, RAG, reflection, several tools, failure) to vary from."""
    from mmat_core.models import (
        ImageRef,
        ModelCall,
        Provenance,
        RagCall,
        SearchHit,
        SourceSample,
        Step,
        ToolCall,
        Trace,
        Usage,
        Verdict,
    )
    from mmat_core.prompts import NO_TOOL, REFLECTION_TURN, final_turn, observation

    def call(purpose: str, tokens: int) -> ModelCall:
        return ModelCall(purpose=purpose, backend="openai", model="gpt-4o", cache_key="c" * 64,
                         usage=Usage(prompt_tokens=tokens, completion_tokens=60, cost_usd=0.0021, latency_s=1.3, calls=1))

    def provenance(source: str, subset: str | None) -> Provenance:
        return Provenance(mmat_version="0.1.0", generator="openai:gpt-4o", offline=False,
                          prompt_versions={"generator": "gen-1", "rr_system": "rr-sys-1", "orr_system": "orr-sys-1"},
                          tool_versions={"image_caption": "1", "ocr": "1", "face_detection": "1"},
                          source=source, subset=subset, licence="Apache-2.0")

    ocr_text = "TOTAL 35.00 CASH 50.00 CHANGE 15.00 THANK YOU " * 3
    boxes = {"lines": [{"text": f"line {i}", "score": 0.98, "box": [10, 20 * i, 200, 20 * i + 18]} for i in range(12)]}
    caption = "A printed shop receipt lying on a wooden table, with a total near the bottom."
    rag_text = " ".join(f"[{i}] Title {i}: a snippet about the landmark and its history number {i}." for i in range(1, 4))
    image = ImageRef(sha256="a" * 64, path="/data/viscot/sroie/X51005.jpg", width=800, height=1200, format="JPEG")
    out = []
    for variant in range(8):
        steps = [
            Step(thought=f"The question asks for the total (variant {variant}). I will read the text.", operators=["ocr"],
                 signal="continue", tool_calls=[ToolCall(name="ocr", version="1", result=ocr_text, data=boxes, latency_s=0.1)],
                 observation=observation([("ocr", ocr_text)]), model_call=call("rationale_step", 900)),
            Step(thought="I also need a description of the scene and one fact from the web.", operators=["image_caption"],
                 rag_query="receipt total meaning" if variant % 2 else None, signal="continue",
                 tool_calls=[ToolCall(name="image_caption", version="1", result=caption)],
                 rag=RagCall(query="receipt total meaning", backend="local", result=rag_text,
                             hits=[SearchHit(title=f"Title {i}", snippet="a snippet", score=0.5) for i in range(3)]) if variant % 2 else None,
                 observation=observation([("image caption", caption)] + ([("rag", rag_text)] if variant % 2 else [])),
                 model_call=call("rationale_step", 1300)),
            Step(thought="The OCR shows TOTAL 35.00, so the total paid is 35.00.", signal="end" if variant % 3 else "continue",
                 observation="" if variant % 3 else NO_TOOL, model_call=call("rationale_step", 1600)),
        ]
        if variant % 3 == 0:
            steps += [Step(kind="reflection", thought="Wait, let me re-check the numbers once more.", signal="reflection",
                           observation=REFLECTION_TURN),
                      Step(kind="correction", thought="CASH 50.00 minus CHANGE 15.00 is 35.00, which agrees.", signal="end")]
        question = "What is the total amount on the receipt?"
        sample = SourceSample(id="__ID__", source="visual_cot", subset="sroie", question=question, answers=["35.00"],
                              constraint="\nAnswer the question using a single word or phrase.", task_type="docvqa",
                              images=[image], licence="Apache-2.0")
        out.append(Trace(id="__ID__", sample=sample, tools=["image_caption", "ocr", "face_detection"], steps=steps,
                         final_prompt=final_turn(question), final_answer="35.00", final_call=call("final_answer", 1800),
                         verdicts=[Verdict(critic="general", verdict="fix" if variant % 3 == 0 else "pass")],
                         status="reflected" if variant % 3 == 0 else ("dropped" if variant == 7 else "kept"),
                         provenance=provenance("visual_cot", "sroie"),
                         usage=Usage(prompt_tokens=6000, completion_tokens=300, cost_usd=0.0105, calls=5),
                         timings={"rationale_s": 6.1, "reflection_s": 1.2}))
    return out


def generate(run_dir: Path, n: int) -> float:
    """Write n stored Traces into run_dir's RunStore; returns the mean JSON size in bytes."""
    from mmat_core.components import FormatContext, ToolInfo
    from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta
    from mmat_core.store import RunStore

    templates = [(t, t.model_dump_json()) for t in template_traces()]
    store = RunStore.open(run_dir)
    ctx = FormatContext(tools=[ToolInfo("image_caption", "image caption", "describe the image in a short caption"),
                               ToolInfo("ocr", "ocr", "recognise the text written in the image"),
                               ToolInfo("face_detection", "face detection", "detect human faces")], rag_enabled=True)
    store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(ctx))
    db = store.connection()
    total = 0
    batch: list[tuple[Any, ...]] = []
    for i in range(1, n + 1):
        trace, text = templates[i % len(templates)]
        sample_id = f"visual_cot/sroie/{i:07d}"
        text = text.replace("__ID__", sample_id)
        total += len(text)
        # The same columns RunStore.add_trace fills, without building a model per row.
        batch.append((i, sample_id, "visual_cot", "sroie", trace.status, None, "image_caption,ocr", "q", "", 0.0105, text))
        if len(batch) == 20_000:
            _insert(db, batch)
    _insert(db, batch)
    store.close()
    return total / max(n, 1)


def _insert(db: Any, batch: list[tuple[Any, ...]]) -> None:
    with db:
        db.execute("BEGIN")
        db.executemany("INSERT INTO samples(seq, id, source, subset, status, failure, tools, question, reflected_by, cost, trace) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
    batch.clear()


def _export_child(run_dir: str, fmt: str, out_dir: str, workers: int, queue: Any) -> None:
    from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

    from mmat_core.exporter import export_run

    formatter = {"rr": RRFormatter, "orr": ORRFormatter}[fmt]()  # an instance: no entry-point lookup needed
    started = time.perf_counter()
    result = export_run(run_dir, [formatter], out_dir, workers=workers)
    elapsed = time.perf_counter() - started
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # Upper bound of the memory held at once: this process plus every worker at its own peak.
    peak_mb = own_mb + (workers * worker_mb if workers > 1 else 0)
    files = result.files[fmt]
    digest = hashlib.sha256()
    with open(files[0], "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    queue.put({"traces": result.traces, "seconds": elapsed, "peak_mb": peak_mb, "bytes": sum(p.stat().st_size for p in files),
               "digest": digest.hexdigest()[:16]})


def export_in_child(run_dir: Path, fmt: str, out_dir: Path, workers: int) -> dict[str, Any]:
    """Export one format in a fresh process; returns its rate and peak memory."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_export_child, args=(str(run_dir), fmt, str(out_dir), workers, queue))
    process.start()
    figures = queue.get()
    process.join()
    return figures


def generate_with_images(run_dir: Path, image_dir: Path, n: int) -> float:
    """n stored Traces, each pointing at its own JPEG in image_dir (real bytes, real SHA-256);
    returns the mean image size in bytes."""
    import io
    import random

    from PIL import Image

    from mmat_core.components import FormatContext
    from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta
    from mmat_core.images import sha256_bytes
    from mmat_core.store import RunStore

    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    # A few noisy tiles, recombined per trace: each file differs (own hash) at photo-like JPEG sizes.
    tiles = [Image.effect_noise((320, 240), 40 + 10 * k).convert("RGB") for k in range(8)]
    templates = [t.model_dump_json() for t in template_traces()]
    store = RunStore.open(run_dir)
    store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(FormatContext(tools=[], rag_enabled=False)))
    db = store.connection()
    total = 0
    batch: list[tuple[Any, ...]] = []
    for i in range(1, n + 1):
        canvas = Image.new("RGB", (640, 480), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        canvas.paste(tiles[i % 8], (rng.randrange(320), rng.randrange(240)))
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        path = image_dir / f"{i:07d}.jpg"
        path.write_bytes(data)
        total += len(data)
        sample_id = f"visual_cot/sroie/{i:07d}"
        text = (templates[i % len(templates)].replace("__ID__", sample_id)
                .replace("/data/viscot/sroie/X51005.jpg", str(path)).replace("a" * 64, sha256_bytes(data)))
        batch.append((i, sample_id, "visual_cot", "sroie", "kept", None, "ocr", "q", "", 0.0105, text))
        if len(batch) == 5_000:
            _insert(db, batch)
    _insert(db, batch)
    store.close()
    return total / max(n, 1)


def _hf_child(run_dir: str, mode: str, out_dir: str, queue: Any) -> None:
    from mmat_plugins.formatters.hf_dataset import HFDatasetFormatter

    from mmat_core.exporter import export_run

    formatter = HFDatasetFormatter(HFDatasetFormatter.Options(images=mode))
    started = time.perf_counter()
    result = export_run(run_dir, [formatter], out_dir)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in Path(out_dir).rglob("*.parquet"))
    queue.put({"traces": result.traces, "seconds": elapsed, "bytes": size,
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def hf_in_child(run_dir: Path, mode: str, out_dir: Path) -> dict[str, Any]:
    """Export hf_dataset with images=mode in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_hf_child, args=(str(run_dir), mode, str(out_dir), queue))
    process.start()
    figures = queue.get()
    process.join()
    return figures


def hf_case(work: Path, n: int) -> tuple[list[str], list[str]]:
    """The embed-vs-path case: table lines and RESULT figures."""
    started = time.perf_counter()
    mean_image = generate_with_images(work / "hf_run", work / "hf_images", n)
    print(f"generated {n:,} traces with their own JPEG (mean {mean_image / 1e3:,.0f} KB) in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    runs = {mode: hf_in_child(work / "hf_run", mode, work / f"hf_out_{mode}") for mode in ("path", "embed")}
    ratio = runs["embed"]["seconds"] / runs["path"]["seconds"]
    lines = []
    for mode, r in runs.items():
        lines += [
            f"{'hf_dataset images=' + mode + ' samples/s':<48} {r['traces'] / r['seconds']:>12,.0f} {'':>12}",
            f"{'hf_dataset images=' + mode + ' parquet MB':<48} {r['bytes'] / 1e6:>12,.1f} {'':>12}",
            f"{'hf_dataset images=' + mode + ' peak memory (MB)':<48} {r['peak_mb']:>12,.0f} {'< ' + str(TARGET_MB):>12}",
        ]
    lines.append(f"{'hf_dataset embed time / path time':<48} {ratio:>12.1f} {'(no target)':>12}")
    figures = [f"hf_n={n}", f"hf_image_kb={mean_image / 1e3:.0f}", f"hf_embed_vs_path_time={ratio:.2f}"]
    for mode, r in runs.items():
        figures += [f"hf_{mode}_samples_per_s={r['traces'] / r['seconds']:.0f}", f"hf_{mode}_mb={r['bytes'] / 1e6:.1f}",
                    f"hf_{mode}_peak_mb={r['peak_mb']:.0f}"]
    return lines, figures


def pydantic_baseline(run_dir: Path, limit: int) -> dict[str, float]:
    """Rate of the validated path vs the dict path on the first ``limit`` traces; checks equal bytes."""
    from mmat_core.exporter import run_format_context, view_decoder
    from mmat_core.formatting import orr_messages, rr_messages, training_record
    from mmat_core.models import Trace
    from mmat_core.store import RunStore
    from mmat_core.writers import dumps_bytes, is_kept

    store = RunStore.open(run_dir)
    ctx = run_format_context(store, run_dir)
    raws = []
    for raw in store.trace_json():
        raws.append(raw)
        if len(raws) == limit:
            break
    store.close()
    figures: dict[str, float] = {}
    for view in ("rr", "orr"):
        def render(trace: Any, view: str = view) -> bytes:
            messages = rr_messages(trace, ctx.tools, ctx.rag_enabled) if view == "rr" else orr_messages(trace)
            return dumps_bytes(training_record(trace, messages))

        started = time.perf_counter()
        slow = [render(t) for t in (Trace.model_validate_json(r) for r in raws) if t.kept]
        figures[f"{view}_pydantic_rate"] = len(raws) / (time.perf_counter() - started)
        started = time.perf_counter()
        decode = view_decoder()
        fast = [render(d) for d in (decode(r) for r in raws) if is_kept(d)]
        figures[f"{view}_dict_rate"] = len(raws) / (time.perf_counter() - started)
        figures[f"{view}_identical"] = float(slow == fast)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50,000 traces instead of 1,000,000 (hf case: 2,000 not 20,000)")
    parser.add_argument("--n", type=int, default=None, help="number of stored traces")
    parser.add_argument("--hf-n", type=int, default=None, help="traces (each with its own image) of the hf_dataset case")
    parser.add_argument("--only", choices=["jsonl", "hf"], default=None, help="run one case only")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    n = args.n or (50_000 if args.quick else 1_000_000)
    hf_n = args.hf_n or (2_000 if args.quick else 20_000)
    work = args.dir or Path(tempfile.mkdtemp(prefix="mmat-bench-export-"))
    run_dir, out_dir = work / "run", work / "out"
    shutil.rmtree(work, ignore_errors=True)
    run_dir.mkdir(parents=True)
    figures: list[str] = []
    hf_lines: list[str] = []
    try:
        if args.only != "hf":
            started = time.perf_counter()
            mean_size = generate(run_dir, n)
            gen_s = time.perf_counter() - started
            print(f"generated {n:,} stored traces (mean {mean_size:,.0f} B of JSON) in {gen_s:.1f} s", file=sys.stderr)
            results = {(fmt, w): export_in_child(run_dir, fmt, out_dir / f"w{w}", w) for fmt in ("rr", "orr") for w in (1, 2)}
            baseline = pydantic_baseline(run_dir, min(n, 20_000))
        if args.only != "jsonl":
            hf_lines, hf_figures = hf_case(work, hf_n)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nExport benchmark ({os.cpu_count()} CPUs); each export in its own process\n")
    print(f"{'measure':<48} {'value':>12} {'target':>12}")
    if args.only != "hf":
        print(f"({n:,} stored Traces)")
        figures += jsonl_table(n, results, baseline)
    if hf_lines:
        print(f"({hf_n:,} stored Traces, one JPEG each)")
        print("\n".join(hf_lines))
        figures += hf_figures
    print("RESULT " + " ".join(figures))


def jsonl_table(n: int, results: dict[tuple[str, int], dict[str, Any]], baseline: dict[str, float]) -> list[str]:
    """Print the RR/ORR lines; returns their RESULT figures."""
    for (fmt, w), r in results.items():
        label = f"{fmt.upper()} {w} process{'es' if w > 1 else ''}"
        print(f"{label + ' samples/s (store -> JSONL)':<48} {r['traces'] / r['seconds']:>12,.0f} {'>= ' + format(TARGET_RATE, ','):>12}")
        print(f"{label + ' peak memory, all processes (MB)':<48} {r['peak_mb']:>12,.0f} {'< ' + str(TARGET_MB):>12}")
    for fmt in ("rr", "orr"):
        same = results[(fmt, 1)]["digest"] == results[(fmt, 2)]["digest"]
        print(f"{fmt.upper() + ' output MB / 1 vs 2 processes identical':<48} {results[(fmt, 1)]['bytes'] / 1e6:>8,.0f} {'yes' if same else 'NO':>3} {'yes':>12}")
    for view in ("rr", "orr"):
        ratio = baseline[f"{view}_dict_rate"] / baseline[f"{view}_pydantic_rate"]
        print(f"{view.upper() + ' pydantic path samples/s (one process)':<48} {baseline[f'{view}_pydantic_rate']:>12,.0f} {'baseline':>12}")
        print(f"{view.upper() + ' view-dict path samples/s (one process)':<48} {baseline[f'{view}_dict_rate']:>12,.0f} {f'x{ratio:.1f}':>12}")
        print(f"{view.upper() + ' same bytes on both paths':<48} {'yes' if baseline[f'{view}_identical'] else 'NO':>12} {'yes':>12}")
    figures = [f"n={n}"]
    for (fmt, w), r in results.items():
        figures += [f"{fmt}_w{w}_samples_per_s={r['traces'] / r['seconds']:.0f}", f"{fmt}_w{w}_peak_mb={r['peak_mb']:.0f}"]
    figures += [
        f"rr_dict_vs_pydantic={baseline['rr_dict_rate'] / baseline['rr_pydantic_rate']:.2f}",
        f"orr_dict_vs_pydantic={baseline['orr_dict_rate'] / baseline['orr_pydantic_rate']:.2f}",
        f"identical={int(baseline['rr_identical'] and baseline['orr_identical'] and all(results[(f, 1)]['digest'] == results[(f, 2)]['digest'] for f in ('rr', 'orr')))}",
    ]
    return figures


if __name__ == "__main__":
    main()
