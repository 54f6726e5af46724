"""`make demo-digits`: transfer learning between two halves of scikit-learn's digits.

1. A small ViT in Hugging Face format is pretrained on a source task (digits 0-4)
   and saved as a local backbone folder (cached for the next run).
2. It is fine-tuned with a new head on a target task it never saw (digits 5-9)
   from a few labelled examples per class (with the default augmentation), next to
   the same fine-tuning without augmentation and the same architecture trained
   from scratch on the same examples. The three held-out accuracies are printed.
3. The fine-tuned model is saved in the BentoML model store, served with
   `bentoml serve service:ImageClassifier`, and asked about held-out images over HTTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import bentoml

from training.backbones import save_random_backbone
from training.config import TrainConfig
from training.data import load_data
from training.train import train
from visiontune.demo.serving import serve_and_classify
from visiontune.flags import quiet_transformers
from visiontune.lifecycle.registry import promote
from visiontune.localserver import REPO

SOURCE = [str(d) for d in range(5)]
TARGET = [str(d) for d in range(5, 10)]
IMAGE_SIZE = 16
PER_CLASS = 10
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "visiontune"


def pretrained_backbone(scratch_dir: Path) -> Path:
    """The source-task backbone: trained once on digits 0-4, then reused from the cache."""
    folder = CACHE / "backbones" / f"vit-small-{IMAGE_SIZE}px-digits-0-4-augment-light"
    if (folder / "config.json").exists():
        print(f"[1/3] reusing the pretrained backbone in {folder}")
        return folder
    print("[1/3] pretraining a small ViT on digits 0-4 (the source task)")
    result = train(
        TrainConfig(
            data="digits",
            classes=SOURCE,
            backbone=str(scratch_dir),
            name="visiontune-demo-source",
            strategy="full",
            image_size=IMAGE_SIZE,
            augment="light",
            epochs=40,
            patience=8,
            lr=1e-3,
            output_dir=scratch_dir.parent / "source-run",
        )
    )
    print(f"      source task held-out accuracy {result.metadata.test.accuracy:.3f}")
    stored = bentoml.models.get(result.tag)
    shutil.copytree(stored.path, folder.with_suffix(".tmp"), dirs_exist_ok=True)
    folder.with_suffix(".tmp").rename(folder)
    bentoml.models.delete(result.tag)  # the backbone lives in the cache, not the store
    return folder


def target_config(
    backbone: Path, name: str, lr: float, output_dir: Path, augment: str = "light"
) -> TrainConfig:
    return TrainConfig(
        data="digits",
        classes=TARGET,
        per_class=PER_CLASS,
        backbone=str(backbone),
        name=name,
        strategy="full",
        image_size=IMAGE_SIZE,
        epochs=50,
        patience=12,
        batch_size=16,
        lr=lr,
        augment=augment,
        output_dir=output_dir,
    )


def main() -> int:
    quiet_transformers()
    work = REPO / "runs" / "demo"
    random_init = Path(tempfile.mkdtemp(prefix="visiontune-demo-")) / "random-vit"
    save_random_backbone(random_init, "vit", IMAGE_SIZE, "small", seed=0)
    backbone = pretrained_backbone(random_init)

    print(f"[2/3] digits 5-9 (never seen by the backbone), {PER_CLASS} training images per class")
    tuned = train(target_config(backbone, "visiontune-classifier", 5e-4, work / "fine-tuned"))
    plain = train(
        target_config(backbone, "visiontune-demo-plain", 5e-4, work / "no-augment", "none")
    )
    scratch = train(target_config(random_init, "visiontune-demo-scratch", 1e-3, work / "scratch"))
    for other in (plain, scratch):
        bentoml.models.delete(other.tag)  # only the fine-tuned model stays in the store
    print(
        f"      fine-tuned from the digits 0-4 backbone: held-out accuracy {tuned.metadata.test.accuracy:.3f}"
    )
    print(
        f"      same ViT trained from scratch:          held-out accuracy {scratch.metadata.test.accuracy:.3f}"
    )
    print(
        f"      fine-tuned without augmentation:         held-out accuracy {plain.metadata.test.accuracy:.3f}"
    )
    print(f"      saved {tuned.tag} (report: {tuned.run_dir / 'report.md'})")
    promote(str(tuned.tag), "make demo: fine-tuned on digits 5-9")
    print(
        f"      promoted {tuned.tag} to production: `bentoml serve service:ImageClassifier` serves it"
    )

    config = target_config(backbone, "-", 5e-4, work)
    held_out = [(image, config.classes[truth]) for image, truth in load_data(config).test]
    print("[3/3] serving the fine-tuned model")
    serve_and_classify(tuned.tag, held_out, work / "held-out")
    return 0
