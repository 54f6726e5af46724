"""`visiontune score` preprocesses as the service does: the same files get the same scores
from its Parquet rows as from a real server's `POST /classify` (both in fp32)."""

from __future__ import annotations

import shutil

import pandas as pd

from tests.support.images import digit_images
from tests.support.servers import serving
from visiontune.cli import main


def test_scoring_gives_the_services_scores_on_the_same_files(
    digits_model, digit_files, tmp_path_factory, tmp_path
):
    folder = tmp_path / "files"
    folder.mkdir()
    for label in ("0", "3", "6"):
        for path in digit_files[label][:2]:
            shutil.copy(path, folder / f"{label}-{path.name}")
    for i, image in enumerate(digit_images(8, 4)):  # JPEGs decoded at reduced size (draft)
        image.resize((200, 150)).save(folder / f"8-{i}.jpg", quality=85)
    files = sorted(folder.iterdir())

    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_PRECISION": "fp32"}
    with serving(tmp_path_factory.mktemp("score-home"), env) as server:
        response = server.classify(files, top_k="3")
    assert response.status_code == 200, response.text
    served = dict(zip(map(str, files), response.json(), strict=True))

    assert main(["score", digits_model, "--data", str(folder), "--output", str(tmp_path / "out"),
                 "--top-k", "3"]) == 0  # fmt: skip
    scored = pd.read_parquet(tmp_path / "out").set_index("id")
    assert sorted(scored.index) == sorted(served)
    for path, answer in served.items():
        row = scored.loc[path]
        assert row["model"] == answer["model"] == digits_model
        assert list(row["top_k_labels"]) == [top["label"] for top in answer["top_k"]], path
        for mine, theirs in zip(row["top_k_scores"], answer["top_k"], strict=True):
            assert abs(mine - theirs["score"]) < 1e-5, path
