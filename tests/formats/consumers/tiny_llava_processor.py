"""A tiny LLaVA-1.5 processor built from a config (no weights, no download): a byte-level BPE
tokenizer trained in memory on a few sentences, a CLIP image processor at 32 px. Imported by the
consumer-side check scripts (it runs in the consumer's environment)."""

from __future__ import annotations


def tiny_llava_processor():  # type: ignore[no-untyped-def]
    """A ``LlavaProcessor`` whose image turns into (32/16)^2 = 4 image tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["USER: ASSISTANT: <THOUGHT> </THOUGHT> <SIGNAL>continue</SIGNAL> the answer is"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=["<image>"])
    fast.chat_template = None
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=16, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, image_token="<image>")
