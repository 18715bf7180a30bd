"""Benchmark: stream generated rows through a source's normalisation and the Curator.

Writes N rows of a JSONL file (the ``jsonl`` source's layout, with a field mapping; questions in
multi-turn-like groups over a pool of real rendered images, a share of duplicates and of bad
rows), then times ``JsonlSource.iter_rows()`` -> ``Curator`` end to end: reading, UTF-8 and JSON
decoding, field mapping, image resolution (cached by path), SourceSample validation, constraint
choice, dedup. A plain ``json.loads`` pass over the same file, timed in the same process, is the
baseline: the ratio holds on a noisy machine where absolute numbers do not.

    .venv/bin/python bench/sources.py            # 1,000,000 rows
    .venv/bin/python bench/sources.py --quick    # 50,000 rows
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_ROWS_PER_S = 20_000
TARGET_PEAK_MB = 500
IMAGES = 256


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_rows(folder: Path, rows: int) -> Path:
    """The image pool and the JSONL file; one row in 200 is bad, one in 50 a duplicate."""
    from PIL import Image, ImageDraw

    for i in range(IMAGES):
        image = Image.new("RGB", (64, 48), (i, 255 - i, (i * 7) % 256))
        ImageDraw.Draw(image).text((4, 4), f"#{i}", fill="black")
        image.save(folder / f"img{i}.png")
    path = folder / "rows.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for n in range(rows):
            if n % 200 == 199:
                fh.write(json.dumps({"rid": n, "q": "", "a": "x", "img": f"img{n % IMAGES}.png"}) + "\n")
                continue
            q = n - 1 if n % 50 == 49 else n  # a duplicate of the row before
            fh.write(json.dumps({"rid": n, "q": f"How many items are listed in row {q} of the chart?",
                                 "a": str(q % 97), "img": f"img{q % IMAGES}.png", "set": f"part{q % 4}"}) + "\n")
    return path


def baseline(path: Path) -> float:
    """Seconds for json.loads of every line: the floor any JSONL source pays."""
    started = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            json.loads(line)
    return time.perf_counter() - started


def measure(path: Path) -> tuple[int, int, int, float]:
    """(rows read, samples kept, rows rejected, seconds) for source + curation."""
    from mmat_core.config import CurationSettings
    from mmat_core.curation import Curator
    from mmat_core.models import Rejected
    from mmat_plugins.sources.generic import JsonlSource

    source = JsonlSource(path=str(path), fields={"id": "rid", "question": "q", "answer": "a", "image": "img", "subset": "set"})
    curator = Curator(CurationSettings(seed=0), [source])
    kept = rejected = 0
    started = time.perf_counter()
    for row in curator(source.iter_rows()):
        if isinstance(row, Rejected):
            rejected += 1
        else:
            kept += 1
    return kept + rejected, kept, rejected, time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="number of rows (overrides --quick)")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="mmat-bench-sources-") as tmp:
        path = write_rows(Path(tmp), rows)
        gc.collect()
        rss_before = peak_rss_mb()
        base_s = baseline(path)
        read, kept, rejected, seconds = measure(path)
        peak = peak_rss_mb()
    rate = read / seconds
    base_rate = rows / base_s
    print(f"sources benchmark: {rows:,} generated rows through JsonlSource + Curator (2 cores shared)")
    print(f"{'figure':<34} {'value':>14} {'target':>12}")
    print(f"{'rows/s (source + curation)':<34} {rate:>14,.0f} {'>= ' + format(TARGET_ROWS_PER_S, ','):>12}")
    print(f"{'peak RSS, MB (whole process)':<34} {peak:>14,.1f} {'< ' + str(TARGET_PEAK_MB):>12}")
    print(f"{'RSS before the run, MB':<34} {rss_before:>14,.1f} {'':>12}")
    print(f"{'json.loads baseline rows/s':<34} {base_rate:>14,.0f} {'':>12}")
    print(f"{'cost vs json.loads alone':<34} {base_rate / rate:>13.1f}x {'':>12}")
    print(f"{'kept / rejected (bad + duplicate)':<34} {f'{kept:,} / {rejected:,}':>14} {'':>12}")
    print(f"RESULT rows={rows} rows_per_s={rate:.0f} peak_rss_mb={peak:.1f} baseline_rows_per_s={base_rate:.0f} "
          f"slowdown_vs_json={base_rate / rate:.2f} kept={kept} rejected={rejected} "
          f"meets_rate={int(rate >= TARGET_ROWS_PER_S)} meets_memory={int(peak < TARGET_PEAK_MB)}")


if __name__ == "__main__":
    main()
