"""Child processes that a test interrupts with SIGINT (Ctrl-C).

A shell that starts a job in the background without job control (`cmd &` in a script, as a CI
runner may) starts it with SIGINT ignored, and an ignored signal stays ignored through exec: the
child Python then installs no KeyboardInterrupt handler and the test's Ctrl-C does nothing. Tests
that send SIGINT give their child the default disposition back with `preexec_fn=default_sigint`.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """Restore SIGINT's default disposition in a child before it execs (pass as ``preexec_fn``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
