"""A few images kept with a stored model, at its input size: ``samples.npz``.

``held_out``: up to :data:`HELD_OUT_IMAGES` labelled images the model was not trained
on (the test split, else the validation split), spread over the labels. The service
checks a runtime against PyTorch fp32 on them at warm-up, and ``visiontune optimize
--int8`` measures the accuracy of its int8 graph on them. ``calibration``: up to
:data:`CALIBRATION_IMAGES` training images, the activation ranges int8 quantization is
calibrated on. Both are model-size uint8 arrays (what ``Preprocessing.resize`` makes),
so nothing is decoded or resized again; numpy's compressed archive holds them, read
back without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLES_FILENAME = "samples.npz"
HELD_OUT_IMAGES = 200  # at 99.5% top-1 agreement, one image in 200 may change its label
CALIBRATION_IMAGES = 100


@dataclass(frozen=True)
class Samples:
    held_out: np.ndarray  # (N, H, W, 3) uint8
    held_out_labels: np.ndarray  # (N,) label ids
    calibration: np.ndarray  # (M, H, W, 3) uint8

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SAMPLES_FILENAME
        np.savez_compressed(
            path,
            held_out=self.held_out,
            held_out_labels=self.held_out_labels.astype(np.int64),
            calibration=self.calibration,
        )
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Samples | None:
        """The samples of a stored model's folder; None where it keeps none."""
        path = Path(folder) / SAMPLES_FILENAME
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as archive:
            return cls(
                held_out=archive["held_out"],
                held_out_labels=archive["held_out_labels"],
                calibration=archive["calibration"],
            )


def spread(labels: list[int], count: int, seed: int = 0) -> list[int]:
    """Indices of at most ``count`` items, taken in turn from each label (seeded order within a
    label), so a small sample still covers every label."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    queues = [list(rng.permutation(indices)) for _, indices in sorted(by_label.items())]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop()))
    return sorted(chosen)
