"""Run in LLaMA-Factory's environment: load a llama_factory export through LLaMA-Factory's own
``get_dataset`` (dataset_info.json parser, loader, ShareGPT converter with ``media_dir``, the
``llava`` template and its multimodal plugin) on a tiny processor (no weights). Prints JSON per
row: image tokens, images, whether the system prompt is in the text, label tokens.
Usage: llamafactory_encode.py DATASET_DIR DATASET_NAME MEDIA_DIR."""

import json
import sys

from llamafactory.data.loader import _get_merged_dataset, get_dataset
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments, ModelArguments
from tiny_llava_processor import tiny_llava_processor
from transformers import Seq2SeqTrainingArguments

dataset_dir, name, media_dir = sys.argv[1:4]
data_args = DataArguments(dataset=name, dataset_dir=dataset_dir, media_dir=media_dir, template="llava", cutoff_len=1 << 20)
model_args = ModelArguments(model_name_or_path="unused")
training_args = Seq2SeqTrainingArguments(output_dir=dataset_dir + "/.lf-out", report_to=[])
aligned = _get_merged_dataset([name], model_args, data_args, training_args, "sft")
processor = tiny_llava_processor()
tokenizer = processor.tokenizer
template = get_template_and_fix_tokenizer(tokenizer, data_args)
encoded = get_dataset(template, model_args, data_args, training_args, "sft", tokenizer, processor)["train_dataset"]
image_id = tokenizer.convert_tokens_to_ids("<image>")
out = []
for index in range(len(encoded)):
    row = encoded[index]
    text = tokenizer.decode(row["input_ids"])
    out.append({"image_tokens": row["input_ids"].count(image_id), "images": len(aligned[index]["_images"] or []),
                "system_in_text": aligned[index]["_system"] in text,
                "label_tokens": sum(1 for label in row["labels"] if label != -100)})
print(json.dumps(out))
