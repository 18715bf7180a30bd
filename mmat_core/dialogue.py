"""A finished Trace's dialogue as plain chat messages, for whoever reviews or continues it: the
LLM-judge critics, the reflection stage's corrections, an offline backend.

It sits beside :mod:`mmat_core.formatting` (it writes each step in RR tags), below the engine, so a
critic plugin reads the dialogue without importing engine internals (docs/architecture.md).
"""

from __future__ import annotations

from mmat_core import prompts
from mmat_core.components import ContentPart, Message
from mmat_core.construct import construct
from mmat_core.formatting import rr_step_text
from mmat_core.models import Trace


def dialogue_messages(trace: Trace, *, with_images: bool = False) -> list[Message]:
    """The dialogue so far as plain chat messages: the first turn, then every step in RR tags with
    the user turn that followed it. No system prompt, no final question, no answer. With
    ``with_images`` the sample's images lead the first turn (for VLM judges)."""
    first = prompts.first_turn(trace.sample.question, trace.sample.constraint)
    if with_images and trace.sample.images:
        parts = [ContentPart(type="image", image=image) for image in trace.sample.images]
        parts.append(ContentPart(type="text", text=first))
        messages = [Message(role="user", content=parts)]
    else:
        messages = [Message(role="user", content=first)]
    for step in trace.steps:
        # Built without validation: both values are strings of the right kind.
        messages.append(construct(Message, role="assistant", content=rr_step_text(step)))
        if step.signal != "end":
            messages.append(construct(Message, role="user", content=step.observation))
    return messages
