"""Shared fixtures of the tool tests: real images on disk, a tool runner, tiny OWL-ViT and Grounding DINO
detectors built from configs (random weights, never downloaded)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmat_core.components import Tool, ToolContext
from mmat_core.engine.tools import ToolRunner
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import SourceSample, ToolCall


def render_text(path: Path, lines: list[str], size: tuple[int, int] = (520, 200)) -> Path:
    """Render black text lines on white with PIL's scalable default font, save as PNG."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=34)
    for i, line in enumerate(lines):
        draw.text((24, 24 + i * 56), line, fill="black", font=font)
    image.save(path)
    return path


def save_photo(path: Path, name: str) -> Path:
    """Save one of the scikit-image wheel's photos (astronaut: one face; coffee: none)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(getattr(data, name)()).save(path)
    return path


def sample_for(image: Path, question: str = "What is shown?") -> SourceSample:
    """A sample whose first image is ``image``."""
    return SourceSample(id=f"test/{image.stem}", source="test", question=question, answers=["x"],
                        images=[image_ref_from_file(image)])


def run_tool(tool: Tool, image: Path, *, question: str = "What is shown?", args: Any = None,
             scratch: dict[str, Any] | None = None, runner: ToolRunner | None = None) -> ToolCall:
    """Run one tool through the engine's runner (validation, worker pool, errors as observations)."""
    own = runner is None
    runner = runner or ToolRunner([tool], ImageStore(), workers=1)

    async def go() -> ToolCall:
        ctx: ToolContext = runner.context(sample_for(image, question), scratch if scratch is not None else {})
        return await runner.call(tool.name, args or {}, ctx)

    try:
        return asyncio.run(go())
    finally:
        if own:
            runner.close()


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """The astronaut (one face) and coffee (no face) photos as files."""
    return {name: save_photo(tmp_path / f"{name}.png", name) for name in ("astronaut", "coffee")}


@pytest.fixture(scope="session")
def tiny_owlvit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised OWL-ViT with tiny text and vision towers, saved with a processor whose
    byte-level BPE tokenizer is trained in memory. Its boxes mean nothing; loading and
    post-processing run for real."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTProcessor, PreTrainedTokenizerFast
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-owlvit")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["a photo of a person", "a cup of coffee", "helmet flag rocket"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<|startoftext|>", eos_token="<|endoftext|>", model_max_length=16)
    config = OwlViTConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 2,
                     "eos_token_id": 3},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(0)
    OwlViTForObjectDetection(config).save_pretrained(folder)
    # The PIL image processor: the default one needs torchvision, which is not installed here.
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessorPil(size={"height": 64, "width": 64},
                                                                         crop_size={"height": 64, "width": 64}),
                                tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


#: The words the tiny Grounding DINO's WordPiece vocabulary knows (anything else is [UNK]).
GROUNDING_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "person", "helmet", "flag", "cup", "coffee",
                   "object", "table", "chart", "bar", "cat", "rocket", "tower", "sign", "text", "document"]


def build_tiny_grounding_dino(folder: Path) -> Path:
    """Save a randomly initialised Grounding DINO with a two-stage Swin backbone and a one-layer BERT,
    and its processor (PIL image processor, WordPiece tokenizer over :data:`GROUNDING_WORDS`), to
    ``folder``. Its boxes mean nothing; loading, the phrase prompt and post-processing run for real."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: index for index, word in enumerate(GROUNDING_WORDS)}
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=32)
    config = GroundingDinoConfig(
        backbone_config={"model_type": "swin", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 1], "window_size": 4,
                         "image_size": 64, "out_features": ["stage1", "stage2"], "out_indices": [1, 2]},
        text_config={"model_type": "bert", "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32},
        # GroupNorm(32, d_model) needs d_model divisible by 32; two decoder layers for the tied box heads.
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_feature_levels=2,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}),
                           tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_grounding_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Grounding DINO saved to a temporary folder (see :func:`build_tiny_grounding_dino`)."""
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-grounding-dino"))


@pytest.fixture
def fake_servers() -> Iterator[Any]:
    """The fake search APIs and detection server on 127.0.0.1."""
    from tests.fakes.search_servers import FakeSearchServers

    with FakeSearchServers() as servers:
        yield servers


Renderer = Callable[[Path, list[str]], Path]
