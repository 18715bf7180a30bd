"""The paper's evaluation through lmms-eval: its eight benchmarks and Dyn-VQA, in plain, RR and ORR mode.

``mmat eval --suite paper`` runs lmms-eval (in its own environment, as a subprocess) with
lmms-eval's OpenAI-compatible model pointed at ``mmat serve``, which mmat starts once per mode.
The modules:

- :mod:`.suite`: which lmms-eval task and metric stand for each benchmark, the paper's reference
  figures and the table;
- :mod:`.tasks`: task files that point lmms-eval's own tasks at local copies of the data;
- :mod:`.fixtures`: tiny local copies of the eight benchmarks in their published layout;
- :mod:`.dynvqa`: the released Dyn-VQA file made ready for mmat's task (``lmms_tasks/dynvqa``);
- :mod:`.judge`: an OpenAI-compatible relay that answers lmms-eval's judge calls with an mmat LLM backend;
- :mod:`.runner`: one mode's run (serve, judge, lmms-eval) and the whole suite.

Nothing here imports lmms-eval: it runs in its own interpreter (``--lmms-python``).
"""
