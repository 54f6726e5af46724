"""The model card: ``README.md`` in the stored Hugging Face folder.

It says what the model is (labels, backbone, strategy, the data it saw), how well
it did (validation and test metrics, per-class F1, calibration), what it is for
and where it falls short, and how to load it with transformers alone. The YAML
header is Hugging Face's model-card metadata (``huggingface_hub.ModelCardData``),
so the folder is ready for the hub as it is.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCardData

from contract.images import Preprocessing
from contract.savedmodel import Metrics, ModelMetadata
from training.markdown import table_cell

CARD_FILENAME = "README.md"


def model_card(tag: str, metadata: ModelMetadata, preprocessing: Preprocessing) -> str:
    """The card's Markdown (UTF-8 text; labels appear as given, in any script)."""
    header = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["visiontune", "image-classification", metadata.strategy],
        base_model=metadata.backbone if _is_hub_id(metadata.backbone) else None,
    ).to_yaml()
    sections = [
        f"---\n{header}\n---",
        f"# {table_cell(tag)}",
        _overview(metadata, preprocessing),
        _labels(metadata),
        _metrics(metadata),
        _calibration(metadata),
        _use_and_limits(metadata),
        _loading(metadata),
    ]
    return "\n\n".join(sections) + "\n"


def _overview(metadata: ModelMetadata, preprocessing: Preprocessing) -> str:
    config = metadata.training_config
    split = ", ".join(f"{name} {n}" for name, n in metadata.split.items())
    return "\n".join(
        [
            f"An image classifier for {len(metadata.labels)} labels, fine-tuned with visiontune "
            f"from `{metadata.backbone}` (strategy `{metadata.strategy}`).",
            "",
            f"- Data: `{config.get('data', '?')}`, fingerprint `{metadata.dataset_fingerprint}` "
            "(SHA-256 of the sorted file list and labels)",
            f"- Images per split: {split}",
            f"- Input: {_policy(preprocessing)}",
            f"- Training: at most {config.get('epochs', '?')} epoch(s), seed "
            f"{config.get('seed', '?')}; the full configuration is in `visiontune.json`",
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(metadata.versions.items())),
        ]
    )


def _policy(preprocessing: Preprocessing) -> str:
    size = f"{preprocessing.height}x{preprocessing.width}"
    if preprocessing.resize_to is None:
        resize = f"resized to {size}"
    elif isinstance(preprocessing.resize_to, int):
        resize = f"shortest edge resized to {preprocessing.resize_to}, centre-cropped to {size}"
    else:
        height, width = preprocessing.resize_to
        resize = f"resized to {height}x{width}, centre-cropped to {size}"
    return f"RGB, {resize} (`{preprocessing.processor_type}`, see `preprocessor_config.json`)"


def _labels(metadata: ModelMetadata) -> str:
    rows = [
        f"| {i} | {table_cell(name)} | {metadata.label_counts.get(name, 0)} |"
        for i, name in enumerate(metadata.labels)
    ]
    return "\n".join(
        ["## Labels", "", "| id | label | training images |", "| --- | --- | --- |", *rows]
    )


def _metrics(metadata: ModelMetadata) -> str:
    splits: list[tuple[str, Metrics]] = [("validation", metadata.validation)]
    if metadata.test is not None:
        splits.append(("test (held out)", metadata.test))
    lines = [
        "## Metrics",
        "",
        "| split | images | accuracy | macro-F1 | ECE | NLL |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {m.n} | {m.accuracy:.4f} | {m.macro_f1:.4f} | {m.ece:.4f} | {m.nll:.4f} |"
            for name, m in splits
        ),
        "",
        "Per-class F1:",
        "",
        "| label | " + " | ".join(name for name, _ in splits) + " |",
        "| --- |" + " --- |" * len(splits),
    ]
    for label in metadata.labels:
        scores = " | ".join(f"{m.per_class_f1.get(label, 0.0):.4f}" for _, m in splits)
        lines.append(f"| {table_cell(label)} | {scores} |")
    return "\n".join(lines)


def _calibration(metadata: ModelMetadata) -> str:
    held = metadata.test or metadata.validation
    where = "held-out test" if metadata.test is not None else "validation"
    return "\n".join(
        [
            "## Calibration",
            "",
            f"Scores are `softmax(logits / T)` with T = {metadata.temperature:.4f}, fitted on the "
            "validation set to minimise its negative log-likelihood; it changes no prediction, "
            f"only the confidence. Expected calibration error (15 bins) on the {where} set: "
            f"{held.ece:.4f}.",
        ]
    )


def _use_and_limits(metadata: ModelMetadata) -> str:
    labels = ", ".join(table_cell(name) for name in metadata.labels)
    return "\n".join(
        [
            "## Intended use and limitations",
            "",
            f"Intended use: sorting images like the training images into one of: {labels}.",
            "",
            "- Every image gets one of these labels, even one that shows none of them; a low "
            "calibrated score is the only sign. Filter out-of-scope images before, or act on "
            "the score.",
            "- The metrics were measured on images from the same source as the training data. "
            "Other cameras, lighting, rendering or framing can score lower: evaluate on your own "
            "images (`visiontune evaluate`) before relying on it.",
            "- The labels are only as good as the training folders or dataset; classes with few "
            "training images (see Labels) are the least reliable.",
            "- It was not assessed for fairness or safety-critical use.",
        ]
    )


def _loading(metadata: ModelMetadata) -> str:
    code = f"""```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

path = "PATH/TO/THIS/FOLDER"  # bentoml models get TAG shows it
processor = AutoImageProcessor.from_pretrained(path)
model = AutoModelForImageClassification.from_pretrained(path).eval()
inputs = processor(Image.open("image.jpg").convert("RGB"), return_tensors="pt")
with torch.inference_mode():
    scores = torch.softmax(model(**inputs).logits / {metadata.temperature:.6f}, dim=-1)[0]
print(model.config.id2label[int(scores.argmax())], float(scores.max()))
```"""
    return "\n".join(["## How to use it", "", "With transformers alone:", "", code])


def _is_hub_id(backbone: str) -> bool:
    parts = backbone.split("/")
    local = backbone.startswith((".", "~", "/")) or Path(backbone).expanduser().exists()
    return len(parts) == 2 and all(parts) and not local
