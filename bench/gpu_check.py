"""GPU check of the hf-lora trainer: a few bf16 LoRA steps on a tiny and on a ~0.5B-parameter VLM.

Both models are random LLaVA-style models built from a config (plugins/trainers/tiny.py), so
nothing is downloaded. Each is trained with mmat's ``hf-lora`` trainer (``mmat-paper`` preset:
batch 1, lr 4e-5, bf16 where supported, gradient checkpointing) on synthetic RR records with
images, and the script prints tokens/s and peak GPU memory.

Without CUDA it says so, trains the tiny model on the CPU in fp32 and skips the large model, so
the script can be checked anywhere before GPU time is spent. When mmat's own modules cannot be
imported (a bare machine with only torch, transformers and peft), it says which import failed
and measures with a minimal LoRA loop instead.

    python bench/gpu_check.py            # full check (CUDA: tiny + 0.5B)
    python bench/gpu_check.py --quick    # tiny model only, fewer steps

The last line is ``RESULT name=value ...``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 300.0
H100_MEMORY_GIB = 78.0

SYSTEM = ("You are a visual assistant that answers questions about images by reasoning in steps and calling "
          "operators when they help: image_caption, ocr, face_detection. ")
WORDS = ["the", "image", "shows", "a", "person", "a", "cat", "a", "receipt", "total", "price", "sign", "red", "blue", "green", "left", "right", "above", "below", "operator", "caption", "face", "detection", "results", "previous", "step", "reasoning", "answer", "thought"]


def need(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def load_tiny_builder() -> Any:
    """plugins/trainers/tiny.py by file path: it needs only torch, transformers and tokenizers."""
    spec = importlib.util.spec_from_file_location("mmat_tiny_vlm", ROOT / "plugins" / "trainers" / "tiny.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def import_trainer() -> tuple[Any, str | None]:
    """mmat's HFLoraTrainer, or None and the reason it cannot be imported here."""
    sys.path.insert(0, str(ROOT))
    try:
        import mmat_plugins  # noqa: F401  (installed: the normal case)
    except ImportError:
        # A plain checkout: make `plugins/` importable as mmat_plugins, as pyproject maps it.
        shim = Path(tempfile.mkdtemp(prefix="mmat-shim-"))
        (shim / "mmat_plugins").symlink_to(ROOT / "plugins")
        sys.path.insert(0, str(shim))
    try:
        from mmat_plugins.trainers.hf_lora import HFLoraTrainer
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return HFLoraTrainer, None


def sentence(rng: random.Random, words: int) -> str:
    """Filler text of about ``words`` words."""
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_records(folder: Path, count: int, words: int, image_side: int, seed: int = 0) -> Path:
    """RR-shaped records (system, question, three assistant steps with tool results, answer) with noise images."""
    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rr.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for index in range(count):
            image = folder / f"img{index}.png"
            pixels = np.random.default_rng(index).integers(0, 255, (image_side, image_side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image)
            step = words // 8
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{sentence(rng, 12)}? Please start your reasoning."},
                {"role": "assistant", "content": f"<THOUGHT>{sentence(rng, step)}</THOUGHT><OPERATOR>image_caption, ocr</OPERATOR><SIGNAL>continue</SIGNAL>"},
                {"role": "user", "content": f"Here are image caption results from the previous step: {sentence(rng, 2 * step)} Please continue your reasoning."},
                {"role": "assistant", "content": f"<THOUGHT>{sentence(rng, step)}</THOUGHT><SIGNAL>continue</SIGNAL>"},
                {"role": "user", "content": "No additional operator or rag results were selected in the previous step. Please continue your reasoning."},
                {"role": "assistant", "content": f"<THOUGHT>{sentence(rng, 3 * step)}</THOUGHT><SIGNAL>end</SIGNAL>"},
                {"role": "user", "content": "Based on the above information, please summarize and give the answer to the initial question."},
                {"role": "assistant", "content": rng.choice(WORDS)},
            ]
            out.write(json.dumps({"id": f"r{index}", "messages": messages, "images": [str(image)]}) + "\n")
    return path


def texts_of(path: Path) -> list[str]:
    """Message texts, to train the tokenizer on."""
    return [m["content"] for line in path.read_text().splitlines() for m in json.loads(line)["messages"]]


def count_parameters(model_dir: Path) -> int:
    """Parameters of a saved model, read from its safetensors headers (no weights loaded)."""
    import struct

    total = 0
    for file in model_dir.glob("*.safetensors"):
        with open(file, "rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__":
                size = 1
                for dim in info["shape"]:
                    size *= dim
                total += size
    return total


def run_case(name: str, trainer_cls: Any, builder: Any, config: Any, work: Path, *, records: int, words: int,
             image_side: int, steps: int, device: str, precision: str) -> dict[str, Any]:
    """Build one model, train ``steps`` LoRA steps with hf-lora, return its figures."""
    started = time.perf_counter()
    data = write_records(work / f"{name}-data", records, words, image_side)
    model_dir = builder.build_tiny_vlm(work / f"{name}-model", texts_of(data), config)
    params = count_parameters(model_dir)
    built_s = time.perf_counter() - started
    logs: list[dict[str, Any]] = []
    overrides = {"max_steps": steps, "logging_steps": 1, "save_steps": 0, "device": device, "precision": precision,
                 "max_length": 8192}
    result = trainer_cls().train(data=data, model=str(model_dir), output_dir=work / f"{name}-run", preset="mmat-paper",
                                 overrides=overrides, log=logs.append)
    # The first step pays for kernel selection and allocator warm-up: leave it out of the rate.
    steady = logs[1:] or logs
    tokens_per_s = sum(r["tokens_per_s"] for r in steady) / len(steady)
    return {
        "case": name,
        "params_m": params / 1e6,
        "steps": result.steps,
        "dtype": result.dtype,
        "first_loss": logs[0]["loss"],
        "last_loss": logs[-1]["loss"],
        "tokens_per_s": tokens_per_s,
        "peak_mem_gib": (result.peak_memory_bytes or 0) / 2**30,
        "wall_s": time.perf_counter() - started,
        "build_s": built_s,
        "path": "hf-lora",
    }


def standalone_case(name: str, builder: Any, config: Any, work: Path, *, steps: int, seq_len: int, device: str) -> dict[str, Any]:
    """A minimal bf16 LoRA loop (torch + transformers + peft only), for machines where mmat cannot be imported."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    started = time.perf_counter()
    model_dir = builder.build_tiny_vlm(work / f"{name}-model", [], config)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(device)
    names = sorted({n.split(".")[-1] for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and "language_model" in n})
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=names))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-5, weight_decay=0.1)
    image_id = model.config.image_token_index
    patches = (config.image_size // config.patch_size) ** 2
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rates, losses = [], []
    for step in range(steps):
        ids = torch.randint(10, 200, (1, seq_len), device=device)
        ids[0, 1 : 1 + patches] = image_id
        pixels = torch.randn(1, 3, config.image_size, config.image_size, device=device, dtype=dtype)
        tick = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(seq_len / (time.perf_counter() - tick))
        losses.append(float(loss))
    steady = rates[1:] or rates
    return {"case": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "steps": steps,
            "dtype": str(dtype).replace("torch.", ""), "first_loss": losses[0], "last_loss": losses[-1],
            "tokens_per_s": sum(steady) / len(steady),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
            "wall_s": time.perf_counter() - started, "build_s": 0.0, "path": "standalone"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--standalone", action="store_true", help="measure with the minimal loop even when mmat imports")
    args = parser.parse_args()

    missing = [m for m in ("torch", "transformers", "peft", "tokenizers") if not need(m)]
    if missing:
        print(f"gpu_check: missing {', '.join(missing)}; install them (pip install torch transformers peft) and rerun")
        print("RESULT status=missing_dependencies")
        return 2
    import peft
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        print("device: CPU only. No CUDA here: the tiny model trains in fp32 on the CPU and the 0.5B bf16 run is skipped.")
        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    builder = load_tiny_builder()
    trainer_cls, why = (None, "--standalone given") if args.standalone else import_trainer()
    if trainer_cls is None:
        print(f"mmat's trainer cannot be imported here ({why}); measuring with the standalone LoRA loop instead")

    tiny_cfg = builder.TinyVLMConfig()
    large_cfg = builder.TinyVLMConfig(vocab_size=2000, model_vocab_size=32000, hidden_size=1024, intermediate_size=4096,
                                      layers=28, heads=16, kv_heads=4, vision_hidden_size=256, vision_intermediate_size=1024,
                                      vision_layers=4, vision_heads=4, image_size=224, patch_size=14)
    steps = args.steps or (4 if args.quick else 12)
    precision = "auto" if cuda else "fp32"
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmat-gpu-check-") as scratch:
        work = args.work or Path(scratch)
        cases = [("tiny", tiny_cfg, {"records": 16, "words": 160, "image_side": 64})]
        if cuda and not args.quick:
            cases.append(("0.5B", large_cfg, {"records": 16, "words": 1200, "image_side": 224}))
        elif not cuda:
            print("skipping the 0.5B model: it is a GPU measurement (needs CUDA)")
        for name, cfg, data in cases:
            print(f"training {name} for {steps} steps ...", flush=True)
            if trainer_cls is not None:
                results.append(run_case(name, trainer_cls, builder, cfg, work, steps=steps, device=device,
                                        precision=precision, **data))
            else:
                results.append(standalone_case(name, builder, cfg, work, steps=steps, device=device,
                                               seq_len=512 if name == "tiny" else 2048))
    total = time.perf_counter() - started

    print()
    print(f"{'case':<6} {'params':>9} {'dtype':>9} {'steps':>5} {'loss first->last':>18} {'tokens/s':>10} "
          f"{'peak GiB':>9} {'target peak':>12} {'wall s':>7}  path")
    for r in results:
        print(f"{r['case']:<6} {r['params_m']:>8.1f}M {r['dtype']:>9} {r['steps']:>5} "
              f"{r['first_loss']:>8.3f}->{r['last_loss']:<8.3f} {r['tokens_per_s']:>10.0f} {r['peak_mem_gib']:>9.2f} "
              f"{'< ' + str(H100_MEMORY_GIB):>12} {r['wall_s']:>7.1f}  {r['path']}")
    print(f"total wall {total:.1f} s (target < {TARGET_WALL_S:.0f} s on an H100)")
    figures = [f"device={'cuda' if cuda else 'cpu'}", f"total_wall_s={total:.1f}"]
    for r in results:
        key = r["case"].replace(".", "_")
        figures += [f"{key}_params_m={r['params_m']:.1f}", f"{key}_tokens_per_s={r['tokens_per_s']:.0f}",
                    f"{key}_peak_mem_gib={r['peak_mem_gib']:.2f}", f"{key}_last_loss={r['last_loss']:.3f}"]
    print("RESULT " + " ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
