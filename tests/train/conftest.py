"""Fixtures of the trainer tests: real RR/ORR files with real photos, and a tiny random VLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.records import corpus_texts, write_training_files


@pytest.fixture(scope="session")
def training_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(rr.jsonl, orr.jsonl), 16 records each, images on disk."""
    return write_training_files(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, training_files: tuple[Path, Path]) -> Path:
    """A random LLaVA-style model (about 0.2M parameters) with a tokenizer trained on the data."""
    from mmat_plugins.trainers.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", corpus_texts(*training_files))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> object:
    """Tiny models run fastest on one thread; on a shared 2-core machine more threads only contend
    (a forward pass measured 25 times slower with two threads under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
