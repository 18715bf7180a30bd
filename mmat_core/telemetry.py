"""Telemetry off: mmat makes no connection the user did not configure, and neither should the
libraries it loads.

onnxruntime (the ``[ocr]`` extra) reads ``ORT_DISABLE_TELEMETRY`` in native code, where no
Python-level guard sees its traffic; Hugging Face Hub and Ray have switches of their own. The CLI
calls :func:`silence_telemetry` at start-up, and the OCR tool again before it imports onnxruntime
(for Python users who never start the CLI). ``tests/scale/test_network.py`` checks the result.
"""

from __future__ import annotations

import os

#: Environment switches that turn off the telemetry of libraries mmat may load.
TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def silence_telemetry() -> None:
    """Set :data:`TELEMETRY_OFF` in the environment (a value the user set is kept), so libraries
    loaded later in this process, or in its children, send no telemetry."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
