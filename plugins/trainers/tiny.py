"""A randomly initialised LLaVA-style vision-language model built from a config, for checks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on the given texts and
wrapped in ``PreTrainedTokenizerFast``; the image processor is the PIL backend of CLIP's (no
torchvision needed); the model is ``LlavaForConditionalGeneration`` with a CLIP vision tower and a
Llama decoder. The same builder makes the few-hundred-thousand-parameter model of the tests and
the ~0.5B-parameter model of ``bench/gpu_check.sh``. The saved folder loads with
``AutoModelForImageTextToText`` and ``AutoProcessor`` like any Hub model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: ChatML-style template; images are rendered as one ``<image>`` placeholder each.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>"]


@dataclass
class TinyVLMConfig:
    """Sizes of the model; the defaults give about 0.2M parameters."""

    vocab_size: int = 1000
    model_vocab_size: int | None = None
    hidden_size: int = 64
    intermediate_size: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 32
    patch_size: int = 16
    max_positions: int = 32768
    seed: int = 0


DEFAULT_TEXTS = (
    "<THOUGHT>Let me look at the image.</THOUGHT><OPERATOR>image_caption, ocr</OPERATOR><SIGNAL>continue</SIGNAL>",
    "Here are image caption results from the previous step: a person in a space suit. Please continue your reasoning.",
    "<THOUGHT>The answer is: 35</THOUGHT><ANSWER>The answer is: 35</ANSWER> What is written on the sign?",
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> object:
    """A byte-level BPE trained in memory, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts) or list(DEFAULT_TEXTS), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_vlm(out_dir: Path, texts: Iterable[str] = DEFAULT_TEXTS, config: TinyVLMConfig | None = None) -> Path:
    """Build, save and return the folder of a random LLaVA-style model with its processor."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: its CLIPImageProcessor is the PIL/numpy one already
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil

    cfg = config or TinyVLMConfig()
    tokenizer = train_tokenizer(list(texts) + list(DEFAULT_TEXTS), cfg.vocab_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    vocab = max(cfg.model_vocab_size or 0, len(tokenizer))
    text_config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden_size,
    )
    model_config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
