"""Tool throughput: OCR and face detection images per second with 1 and 2 workers, and the time
of a rerun that finds every result in the cache.

    .venv/bin/python bench/tools.py          # 1,000 mixed images (several minutes on 2 cores)
    .venv/bin/python bench/tools.py --quick  # 60 images, under a minute

The images are half rendered text (receipts, signs) and half photos from the scikit-image wheel,
cropped and resized so every file has its own hash. Each tool runs through the engine's
ToolRunner exactly as in a build (worker pool, cache, errors as observations).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmat_core.components import Tool
from mmat_core.engine.cache import Cache
from mmat_core.engine.tools import ToolRunner
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import SourceSample

WORDS = ["TOTAL", "CAFE", "ROAD", "TAX", "12.50", "OPEN", "DAILY", "EXIT", "PLATFORM", "4", "INVOICE", "2024", "MILK", "BREAD", "SALE", "30%", "OFF"]


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct small images: rendered text and photo crops, alternating."""
    from PIL import Image, ImageDraw, ImageFont
    from skimage import data

    rng = random.Random(seed)
    photos = [Image.fromarray(getattr(data, name)()) for name in ("astronaut", "coffee", "chelsea")]
    font = ImageFont.load_default(size=26)
    paths = []
    for i in range(count):
        path = folder / f"img{i:05d}.png"
        if i % 2 == 0:
            image = Image.new("RGB", (360, 160), "white")
            draw = ImageDraw.Draw(image)
            for row in range(3):
                draw.text((16, 12 + row * 48), " ".join(rng.sample(WORDS, 3)), fill="black", font=font)
        else:
            photo = photos[(i // 2) % 3]
            w, h = photo.size
            left, top = rng.randint(0, w // 8), rng.randint(0, h // 8)
            image = photo.crop((left, top, left + w * 7 // 8, top + h * 7 // 8)).resize((320, 320))
        image.save(path)
        paths.append(path)
    return paths


async def run_all(runner: ToolRunner, name: str, samples: list[SourceSample]) -> float:
    """Run one tool on every sample, as many at once as the pool has workers; seconds taken."""
    gate = asyncio.Semaphore(runner.workers * 2)

    async def one(sample: SourceSample) -> None:
        async with gate:
            call = await runner.call(name, {}, runner.context(sample, {}))
            if call.error:
                raise RuntimeError(call.error)

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in samples))
    return time.perf_counter() - started


def measure(tool: Tool, samples: list[SourceSample], workers: int, cache: Cache | None = None) -> float:
    """Images per second of ``tool`` with ``workers`` workers (engine warmed on a few images first)."""
    runner = ToolRunner([tool], ImageStore(), workers=workers, cache=cache)
    try:
        asyncio.run(run_all(ToolRunner([tool], ImageStore(), workers=workers), tool.name, samples[: workers * 2]))
        seconds = asyncio.run(run_all(runner, tool.name, samples))
    finally:
        runner.close()
    return len(samples) / seconds


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 images instead of 1,000")
    parser.add_argument("--images", type=int, default=None)
    args = parser.parse_args()
    count = args.images or (60 if args.quick else 1000)

    from mmat_plugins.tools.faces import FaceDetectionTool
    from mmat_plugins.tools.ocr import OCRTool

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder, count)
        samples = [SourceSample(id=f"bench/{p.stem}", source="bench", question="?", answers=["x"],
                                images=[image_ref_from_file(p)]) for p in paths]
        # One onnxruntime thread per call when two workers share the two cores, so they do not fight.
        ocr_1 = measure(OCRTool(), samples, workers=1)
        ocr_2 = measure(OCRTool(threads=1), samples, workers=2)
        faces_1 = measure(FaceDetectionTool(), samples, workers=1)
        faces_2 = measure(FaceDetectionTool(), samples, workers=2)

        cache = Cache(folder / "cache.sqlite")
        first_runner = ToolRunner([OCRTool(threads=1), FaceDetectionTool()], ImageStore(), workers=2, cache=cache)
        first = asyncio.run(run_all(first_runner, "ocr", samples)) + asyncio.run(run_all(first_runner, "face_detection", samples))
        first_runner.close()
        rerun_runner = ToolRunner([OCRTool(threads=1), FaceDetectionTool()], ImageStore(), workers=2, cache=cache)
        rerun = asyncio.run(run_all(rerun_runner, "ocr", samples)) + asyncio.run(run_all(rerun_runner, "face_detection", samples))
        cached = sum(rerun_runner.stats.cached.values())
        rerun_runner.close()
        cache.close()

    rows = [
        ("OCR images/s, 1 worker", f"{ocr_1:.1f}", ">= 2 (small image well under 1 s)"),
        ("OCR images/s, 2 workers", f"{ocr_2:.1f}", f"> 1 worker ({ocr_2 / ocr_1:.2f}x)"),
        ("faces images/s, 1 worker", f"{faces_1:.1f}", ">= 10 (about 0.1 s an image)"),
        ("faces images/s, 2 workers", f"{faces_2:.1f}", f"> 1 worker ({faces_2 / faces_1:.2f}x)"),
        (f"first run, OCR + faces on {count} images (s)", f"{first:.2f}", ""),
        (f"cache-hit rerun (s), {cached}/{2 * count} hits", f"{rerun:.3f}", f"<= 5% of first run ({rerun / first:.1%})"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>8}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>8}  {target}")
    print(f"RESULT images={count} ocr_1w={ocr_1:.2f} ocr_2w={ocr_2:.2f} faces_1w={faces_1:.2f} faces_2w={faces_2:.2f} "
          f"first_run_s={first:.3f} rerun_s={rerun:.3f} rerun_ratio={rerun / first:.4f} cache_hits={cached}")


if __name__ == "__main__":
    main()
