"""The credential scrubber's cost per call (``mmat_core.secrets.scrub``), on what it sees most:
a stored trace and a question that hold no credential, and a text that holds a key.

    .venv/bin/python bench/scrub.py                       # 20,000 calls per text
    .venv/bin/python bench/scrub.py --quick               # 2,000 calls per text
    .venv/bin/python bench/scrub.py --trace T.json        # a trace of your own (default: a generated one)
    .venv/bin/python bench/scrub.py --reference OLD.py    # also time another secrets.py, same process

The default trace is a 6 KB trace JSON of the shape a build stores (OCR lines, tool calls,
steps). Each figure is the best of five rounds, in µs per call. Target: a trace without a
credential in under 25 µs on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import timeit
from pathlib import Path
from types import ModuleType
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmat_core import secrets

TARGET_TRACE_US = 25.0
KEY = "sk-proj-" + "Q3b9xT2mLw8ZkR4vN7pH1sJd"


def generated_trace() -> str:
    """A trace JSON of about 6 KB holding no credential (the shape of a stored one)."""
    lines = [{"text": f"line {i} total 12.{i:02d} monthly sales", "score": 0.98, "box": [10 * i, 18, 562, 53]} for i in range(40)]
    trace = {"schema_version": 1, "id": "sample/chart-001",
             "sample": {"id": "sample/chart-001", "question": "Which month has the highest sales?", "answers": ["April"],
                        "images": [{"sha256": "8d87bfabe1bee9aa3b90ed67c1d733471332d3241a4cf33b75c1d20758970458", "width": 800}]},
             "steps": [{"kind": "rationale", "thought": "The question asks which month has the highest sales; I will read the chart with OCR.",
                        "tool_calls": [{"name": "ocr", "version": "2", "args": {}, "data": {"lines": lines}}],
                        "usage": {"prompt_tokens": 812, "completion_tokens": 64}}]}
    return json.dumps(trace)


def per_call_us(scrub: Callable[[str], str], text: str, calls: int) -> float:
    """Best of five rounds of ``calls`` calls, µs per call."""
    return min(timeit.repeat(lambda: scrub(text), number=calls, repeat=5)) / calls * 1e6


def load(path: Path) -> ModuleType:
    """A secrets.py imported from ``path`` under a name of its own."""
    spec = importlib.util.spec_from_file_location("reference_secrets", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 calls per text instead of 20,000")
    parser.add_argument("--trace", type=Path, default=None, help="a trace JSON file to time on")
    parser.add_argument("--reference", type=Path, default=None, help="another secrets.py to time beside this one")
    args = parser.parse_args()
    calls = 2_000 if args.quick else 20_000
    trace = args.trace.read_text() if args.trace else generated_trace()
    texts = {
        "trace": trace,
        "question": "Which month has the highest sales? Answer the question using a single word or phrase.",
        "key": f'openai error 401: {{"error": "Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}',
    }
    assert KEY not in secrets.scrub(texts["key"]) and secrets.scrub(trace) == trace
    reference = load(args.reference) if args.reference else None
    figures = {}
    print(f"\nscrub() per call, best of 5 x {calls:,} calls (trace {len(trace.encode()):,} B)\n")
    print(f"{'text':<34} {'this µs':>9} {'reference µs':>13} {'speed-up':>9} {'target':>9}")
    for name, text in texts.items():
        now = per_call_us(secrets.scrub, text, calls)
        figures[f"{name}_us"] = now
        then = per_call_us(reference.scrub, text, calls) if reference else None
        if then is not None:
            figures[f"{name}_reference_us"], figures[f"{name}_speedup"] = then, then / now
        target = f"< {TARGET_TRACE_US:.0f}" if name == "trace" else ""
        print(f"{name + ' (' + str(len(text.encode())) + ' B)':<34} {now:>9.1f} {then if then is not None else float('nan'):>13.1f} "
              f"{then / now if then else float('nan'):>8.1f}x {target:>9}")
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
