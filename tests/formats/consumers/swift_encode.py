"""Run in ms-swift's environment: load an ms_swift export with swift's ``load_dataset`` and encode
every row with swift's ``llava1_5_hf`` template on a tiny processor (no weights). Prints JSON:
per row, the image-token count, the images, whether the system prompt is in the text, and the
number of label tokens. Usage: swift_encode.py FILE IMAGE_ROOT."""

import json
import os
import sys

os.environ["ROOT_IMAGE_DIR"] = sys.argv[2]

import torch
from swift.dataset import load_dataset
from swift.model.model_meta import MODEL_MAPPING, ModelInfo
from swift.template import get_template
from tiny_llava_processor import tiny_llava_processor
from transformers import LlavaConfig

processor = tiny_llava_processor()
processor.model_info = ModelInfo(model_type="llava1_5_hf", model_dir="/nonexistent/tiny-llava", torch_dtype=torch.float32,
                                 max_model_len=1 << 20, quant_method=None, quant_bits=0, is_multimodal=True,
                                 config=LlavaConfig(), task_type="causal_lm")
processor.model_meta = MODEL_MAPPING["llava1_5_hf"]
template = get_template(processor, template_type="llava1_5_hf", max_length=1 << 20)
template.set_mode("train")
image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
train, _ = load_dataset([sys.argv[1]], num_proc=1)
out = []
for index in range(len(train)):
    row = train[index]
    encoded = template.encode(row)
    text = processor.tokenizer.decode(encoded["input_ids"])
    out.append({"image_tokens": encoded["input_ids"].count(image_id), "images": len(row["images"] or []),
                "pixel_values": list(encoded["pixel_values"].shape) if "pixel_values" in encoded else None,
                "system_in_text": row["messages"][0]["content"] in text,
                "label_tokens": sum(1 for label in encoded["labels"] if label != -100)})
print(json.dumps(out))
