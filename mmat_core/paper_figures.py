"""The MMAT-1M paper's published figures, which ``mmat stats --compare paper`` puts beside a build's.

Source: "MMAT-1M: A Large Reasoning Dataset for Multimodal Agent Tuning" (arXiv 2507.21924,
July 2025), as transcribed in the project's format notes (``MMAT-SPEC.md``):

* collections and sub-datasets: the paper's Table 1 (dialogues per collection; sub-dataset
  entries in thousands, as printed);
* steps per QA pair, operator call counts, RAG calls and reflection counts: the paper's dataset
  statistics (quoted in MMAT-SPEC.md, stages 2 and 3);
* quality: "over 89%" of samples scored high by the VLM judge (no threshold is given).

Everything here is a number the paper prints; the only choice of ours is
:data:`HIGH_QUALITY_MIN`, what "high" means for a quality score, which the paper does not say.
The mmat names of collections and sub-datasets are those of the built-in source plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Where the figures come from, printed under every comparison.
CITATION = "MMAT-1M (arXiv 2507.21924), Table 1 and the dataset statistics; transcribed in MMAT-SPEC.md"

#: QA pairs in the released data: every per-sample rate below is divided by it.
QA_PAIRS = 1_090_263
#: Dialogues in the five collections (a dialogue holds one or more QA pairs).
DIALOGUES = 902_965


@dataclass(frozen=True)
class Collection:
    """One of the five source collections of Table 1, under the mmat source's name."""

    title: str
    dialogues: int
    #: mmat sub-dataset name -> (the paper's name, entries as Table 1 prints them)
    subsets: dict[str, tuple[str, int]] = field(default_factory=dict)


#: mmat source name -> the collection (Table 1).
COLLECTIONS: dict[str, Collection] = {
    "visual_cot": Collection("Visual CoT", 434_265, {
        "cub": ("Birds-200-2011", 10_100), "docvqa": ("DocVQA", 33_500), "dude": ("DUDE", 11_700),
        "flickr30k": ("Flickr30K", 135_700), "gqa": ("GQA", 98_100), "infographicsvqa": ("InfographicsVQA", 15_100),
        "openimages": ("Open Images", 43_100), "sroie": ("SROIE", 2_500), "textcap": ("TextCap", 32_200),
        "textvqa": ("TextVQA", 18_500), "visual7w": ("Visual7W", 30_500), "vsr": ("VSR", 3_400),
    }),
    "llava_cot": Collection("LLaVA-CoT", 98_561, {
        "sharegpt4v": ("ShareGPT4V", 31_300), "chartqa": ("ChartQA", 17_000), "aokvqa": ("A-OKVQA", 16_100),
        "ai2d": ("AI2D", 11_400), "geoqa+": ("GeoQA+", 11_400), "scienceqa": ("ScienceQA", 5_600),
        "docvqa": ("DocVQA", 4_000), "pisc": ("PISC", 900), "clevr": ("CLEVR", 500), "clevr_math": ("CLEVR-Math", 500),
    }),
    "cauldron": Collection("The Cauldron", 215_680, {
        "hateful_memes": ("HatefulMemes", 8_500), "screen2words": ("Screen2Words", 15_700), "st_vqa": ("ST-VQA", 17_200),
        "vistext": ("VisText", 10_000), "robut_wikisql": ("WikiSQL", 75_000), "robut_wtq": ("WTQ", 38_200),
        "iconqa": ("IconQA", 27_300), "raven": ("RAVEN", 20_900), "intergps": ("Inter-GPS", 1_300), "tqa": ("TQA", 1_500),
    }),
    "tabmwp": Collection("TabMWP", 23_059),
    "infoseek": Collection("InfoSeek", 131_400),
}

#: Rationale steps per QA pair -> share of QA pairs ("5+" is five or more). The four printed
#: shares sum to 99.7%; the paper lists no other step count.
STEP_SHARES: dict[str, float] = {"2": 0.007, "3": 0.70, "4": 0.20, "5+": 0.09}

#: Operator calls in the released data, under mmat's operator names (``label_bbox`` is the
#: paper's open-vocabulary detection, OVD).
OPERATOR_CALLS: dict[str, int] = {"image_caption": 620_644, "ocr": 471_866, "label_bbox": 156_237, "face_detection": 20_077}
#: Web retrievals (RAG) in the released data.
RAG_CALLS = 205_682

#: Reflections spliced into the released data, by critic.
REFLECTIONS: dict[str, int] = {"general": 46_508, "math": 11_139}

#: "Over 89%" of samples scored high: a lower bound.
QUALITY_HIGH_SHARE = 0.89
#: Our reading of "high" (the paper gives no number): a score of 0.8 or more on its 0.0-1.0 scale.
HIGH_QUALITY_MIN = 0.8
