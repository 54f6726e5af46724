"""The capture store: what is kept, the layout, atomic files, the budget and every drop,
on a real folder and on moto's S3 server."""

from __future__ import annotations

import io
import logging
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from contract.capture import CaptureError, read_image, read_records
from service.capture import CaptureCounters, CaptureWriter, Sampler
from service.settings import Settings
from tests.support.builders import captured
from tests.support.images import digit_images
from tests.support.s3 import create_bucket, moto_s3


def png(digit: int = 3, index: int = 0) -> bytes:
    buffer = io.BytesIO()
    digit_images(digit, 1, start=index)[0].save(buffer, "PNG")
    return buffer.getvalue()


class Recorded(CaptureCounters):
    """The counters a test reads back."""

    def __init__(self):
        self.images, self.bytes, self.drops, self.fullness = 0, 0, Counter(), []
        super().__init__(written=self._written, dropped=self._dropped, full=self.fullness.append)

    def _written(self, model: str, size: int) -> None:
        assert model == "digits:v1"
        self.images += 1
        self.bytes += size

    def _dropped(self, model: str, reason: str) -> None:
        assert model == "digits:v1"
        self.drops[reason] += 1


def test_sampled_requests_and_low_confidence_answers_are_kept():
    sampler = Sampler(rate=0.25, low_confidence=0.5, rng=random.Random(0))
    sampled = [sampler.sample_request() for _ in range(4000)]
    assert 0.22 < sum(sampled) / len(sampled) < 0.28
    assert sampler.reason(0.9, sampled=True) == "sampled"
    assert sampler.reason(0.2, sampled=True) == "sampled"  # a fair sample stays whole
    assert sampler.reason(0.2, sampled=False) == "low_confidence"
    assert sampler.reason(0.9, sampled=False) is None
    assert Sampler(0.0, None).reason(0.01, sampled=False) is None
    assert not Sampler(0.0, None).sample_request()


def test_records_and_images_land_in_hourly_partitions(tmp_path):
    counters = Recorded()
    writer = CaptureWriter(str(tmp_path / "capture"), max_bytes=10**9, counters=counters).start()
    hour = datetime(2026, 5, 1, 13, 59, tzinfo=UTC)
    images = {f"id-{i}": png(i % 10, i) for i in range(5)}
    for i, (inference_id, image) in enumerate(images.items()):
        when = hour + timedelta(minutes=i)  # two in 13h, three in 14h
        writer.offer(captured(inference_id, str(i), 0.9, image=image, when=when))
    writer.close()
    records = list(read_records(str(tmp_path / "capture")))
    assert sorted(r.inference_id for r in records) == sorted(images)
    for record in records:
        assert read_image(str(tmp_path / "capture"), record) == images[record.inference_id]
        assert record.image.startswith(record.time.strftime("%Y/%m/%d/%H/images/"))
    assert {p.name for p in (tmp_path / "capture/2026/05/01").iterdir()} == {"13", "14"}
    files = [p for p in (tmp_path / "capture").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")]  # no temporary file left
    assert len([p for p in files if p.suffix == ".jsonl"]) == 2
    assert counters.images == 5 and counters.bytes == sum(p.stat().st_size for p in files)


def test_a_full_budget_stops_capture_with_a_log_line_and_counts(tmp_path, caplog):
    counters = Recorded()
    image = png()
    line = len(captured("id-0", "3", 0.9, image=image).record.model_dump_json()) + 1
    budget = 2 * (len(image) + line) + line  # room for two captures and their lines
    writer = CaptureWriter(str(tmp_path), max_bytes=budget, counters=counters).start()
    with caplog.at_level(logging.WARNING, logger="bentoml.visiontune"):
        for i in range(4):
            writer.offer(captured(f"id-{i}", "3", 0.9, image=image))
        writer.close()
    assert len(list(read_records(str(tmp_path)))) == 2
    assert counters.drops == {"budget_full": 2}
    assert counters.fullness == [True]
    assert "at its budget (VISIONTUNE_CAPTURE_MAX_GB" in caplog.text
    used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert used <= budget


def test_capture_resumes_once_there_is_room_again(tmp_path):
    counters = Recorded()
    image = png()
    room = len(image) + len(captured("x", "3", 0.9, image=image).record.model_dump_json()) + 50
    writer = CaptureWriter(str(tmp_path), room, counters=counters, remeasure_s=0).start()
    writer.offer(captured("first", "3", 0.9, image=image))
    writer.offer(captured("refused", "3", 0.9, image=image))
    deadline = time.monotonic() + 30
    while counters.images + sum(counters.drops.values()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for path in [*tmp_path.rglob("*.jsonl"), *tmp_path.rglob("*.png")]:
        path.unlink()  # someone took the records away to label them
    writer.offer(captured("after", "3", 0.9, image=image))
    writer.close()
    assert [r.inference_id for r in read_records(str(tmp_path))] == ["after"]
    assert counters.fullness == [True, False]


def test_a_slow_store_drops_sampled_captures_first(tmp_path):
    """Nothing writes (the writer thread is not started): sampled captures may fill half
    the queue, low-confidence ones all of it; the rest are dropped and counted."""
    counters = Recorded()
    writer = CaptureWriter(str(tmp_path), 10**9, queue_size=4, counters=counters)
    image = png()
    offered = [writer.offer(captured(f"s{i}", "3", 0.9, image=image)) for i in range(3)]
    offered += [
        writer.offer(captured(f"l{i}", "3", 0.1, image=image, reason="low_confidence"))
        for i in range(3)
    ]
    assert offered == [True, True, False, True, True, False]
    assert counters.drops == {"queue_full": 2}


def test_a_failing_store_drops_the_batch_and_keeps_running(tmp_path):
    counters = Recorded()
    writer = CaptureWriter(str(tmp_path), 10**9, counters=counters).start()
    (tmp_path / "2026").write_text("a file where the year's folder goes")
    writer.offer(captured("lost", "3", 0.9, image=png(), when=datetime(2026, 1, 1, tzinfo=UTC)))
    writer.offer(captured("kept", "3", 0.9, image=png(), when=datetime(2027, 1, 1, tzinfo=UTC)))
    writer.close()
    assert counters.drops == {"write_error": 1}
    assert [r.inference_id for r in read_records(str(tmp_path))] == ["kept"]


def test_a_location_that_cant_be_written_is_named_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CaptureError, match=f"VISIONTUNE_CAPTURE={blocker}/capture: can't write"):
        CaptureWriter(str(blocker / "capture"), 10**9).check()
    with pytest.raises(CaptureError, match="nosuch://bucket/x: the capture is not a folder or"):
        read_records("nosuch://bucket/x").__next__()
    with pytest.raises(CaptureError, match="VISIONTUNE_CAPTURE is not a folder or a known"):
        CaptureWriter("nosuch://bucket/x", 10**9)


def test_settings_name_the_variable():
    with pytest.raises(ValueError, match="VISIONTUNE_CAPTURE_RATE"):
        Settings.from_env({"VISIONTUNE_CAPTURE_RATE": "1.5"})
    with pytest.raises(ValueError, match="VISIONTUNE_CAPTURE_MAX_GB"):
        Settings.from_env({"VISIONTUNE_CAPTURE_MAX_GB": "0"})
    with pytest.raises(ValueError, match="VISIONTUNE_CAPTURE_HEADERS(.|\n)*authorization carries"):
        Settings.from_env({"VISIONTUNE_CAPTURE_HEADERS": "user-agent,Authorization"})
    with pytest.raises(ValueError, match="VISIONTUNE_SHADOW_RATE"):
        Settings.from_env({"VISIONTUNE_SHADOW_RATE": "-0.1"})
    settings = Settings.from_env(
        {"VISIONTUNE_CAPTURE": " ", "VISIONTUNE_CAPTURE_HEADERS": "User-Agent, X-Tenant"}
    )
    assert settings.capture is None
    assert settings.capture_headers == ["user-agent", "x-tenant"]
    assert Settings.from_env({}).shadow_share(has_gpu=False) == 0.1
    assert Settings.from_env({}).shadow_share(has_gpu=True) == 1.0
    assert Settings.from_env({"VISIONTUNE_SHADOW_RATE": "0.5"}).shadow_share(True) == 0.5


def test_several_models_are_named_in_order():
    settings = Settings.from_env({"VISIONTUNE_MODELS": "b=digits@production, a=other:v2"})
    assert list(settings.served_models.items()) == [("b", "digits@production"), ("a", "other:v2")]
    single = Settings.from_env({"VISIONTUNE_MODEL": "digits:v1"})
    assert single.served_models == {"digits": "digits:v1"}
    for bad, message in [
        ("a=x,a=y", "'a' is given twice"),
        ("a", "is not NAME=REF"),
        ("A B=x", "use lower-case letters"),
        (",", "names no model"),
    ]:
        with pytest.raises(ValueError, match=f"VISIONTUNE_MODELS(.|\n)*{message}"):
            Settings.from_env({"VISIONTUNE_MODELS": bad})
    with pytest.raises(ValueError, match="VISIONTUNE_MODEL and VISIONTUNE_MODELS are both set"):
        Settings.from_env({"VISIONTUNE_MODEL": "x:1", "VISIONTUNE_MODELS": "a=x:2"})


def test_capture_to_an_object_store(tmp_path):
    """The same writer and readers on S3 (moto's server): whole objects, same layout."""
    with moto_s3(tmp_path / "moto.log") as env, pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        create_bucket(env, "captures")
        url = "s3://captures/serving/digits"
        counters = Recorded()
        writer = CaptureWriter(url, max_bytes=10**9, counters=counters).start()
        images = {f"id-{i}": png(i, i) for i in range(3)}
        for inference_id, image in images.items():
            writer.offer(captured(inference_id, "3", 0.4, image=image))
        writer.close()
        records = list(read_records(url))
        assert sorted(r.inference_id for r in records) == sorted(images)
        for record in records:
            stored = read_image(url, record)
            assert stored == images[record.inference_id]
            assert Image.open(io.BytesIO(stored)).size == (8, 8)
        assert counters.images == 3 and not counters.drops
