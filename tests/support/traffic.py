"""A client that keeps classifying while a release switches models, and what it saw.

The end-to-end tests run one during every switch of the served model: every
answer must be a 200, first from the old model, then from the new one, never back.
"""

from __future__ import annotations

import io
import threading
import time

import httpx

from tests.support.builders import CLASSES
from tests.support.images import digit_images


def pngs() -> list[bytes]:
    """Two unseen images of each class."""
    out = []
    for label in CLASSES:
        for image in digit_images(int(label), 2, start=150):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
    return out


def classify(url: str, images: list[bytes]) -> httpx.Response:
    files = [("images", (f"digit-{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, timeout=60)


def served_tag(url: str) -> str:
    """The one tag that /model and every answer name."""
    response = classify(url, pngs())
    assert response.status_code == 200, response.text
    (tag,) = {prediction["model"] for prediction in response.json()}
    assert httpx.get(f"{url}/model", timeout=30).json()["tag"] == tag
    return tag


class Traffic(threading.Thread):
    """A client sending one image at a time, on a new connection each, until stopped."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, str]] = []  # (status, tag) in order
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.image = pngs()[:1]

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                response = classify(self.url, self.image)
                tag = response.json()[0]["model"] if response.status_code == 200 else ""
                self.answers.append((response.status_code, tag))
            except (httpx.HTTPError, ValueError) as err:
                self.failures.append(f"{type(err).__name__}: {err}")
            time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join(timeout=120)

    def tags(self) -> list[str]:
        """The tags that answered, each once, in the order they took over."""
        seen: list[str] = []
        for _, tag in self.answers:
            if not seen or seen[-1] != tag:
                seen.append(tag)
        return seen


def assert_switched(traffic: Traffic, old: str, new: str) -> None:
    assert not traffic.failures, traffic.failures[:5]
    statuses = {status for status, _ in traffic.answers}
    assert statuses == {200}, [a for a in traffic.answers if a[0] != 200][:5]
    assert traffic.tags() == [old, new]
    print(f"{len(traffic.answers)} requests during the switch, all 200")
