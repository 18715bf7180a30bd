"""Assemble and run a pipeline in Python (the example of docs/python-api.md).

Run: python examples/python_api.py [OUT_DIR]
"""

from __future__ import annotations

import sys

from mmat_core import Pipeline, get_plugin_manager


def main(out_dir: str = "runs/api-demo") -> int:
    """Build RR and ORR for the sample's charts and documents; return the number kept."""
    ocr = get_plugin_manager().create("tool", "ocr", max_side=640)
    pipeline = Pipeline(
        source={"name": "sample", "subsets": ["chart", "document"]},
        llm="offline",
        tools=[ocr, "face_detection"],
        critics=["answer_match"],
        formatters=["rr", "orr"],
        search=False,
    )
    result = pipeline.run(out_dir)
    print(result.manifest.counts["kept"], "samples kept")
    print(result.outputs["rr"])
    return result.manifest.counts["kept"]


if __name__ == "__main__":
    main(*sys.argv[1:2])
