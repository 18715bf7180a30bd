"""The engine: everything between a SourceSample and a finished Trace.

``scheduler`` paces model calls, ``cache`` remembers their answers, ``client`` ties the two into
the :class:`~mmat_core.components.LLMClient` that components use, ``tools`` runs operators,
``rationale`` is the stage-2 loop and ``reflection`` the stage-3 critics and splice.
"""
