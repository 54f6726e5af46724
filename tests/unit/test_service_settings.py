from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.savedmodel import DEFAULT_MODEL_TAG, MODEL_ENV
from service.settings import Settings, available_cpus


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.model == DEFAULT_MODEL_TAG
    assert settings.batching == {"batchable": True, "max_batch_size": 32, "max_latency_ms": 10_000}
    assert settings.max_body_bytes == 32 * 1024 * 1024


def test_environment_sets_fields_and_ignores_other_variables():
    settings = Settings.from_env(
        {
            MODEL_ENV: "digits:v1",
            "VISIONTUNE_MAX_BATCH_SIZE": "8",
            "VISIONTUNE_MAX_LATENCY_MS": "250",
            "VISIONTUNE_COMPILE": "true",
            "VISIONTUNE_URL": "http://elsewhere",
            "HOME": "/root",
        }
    )
    assert settings.model == "digits:v1"
    assert settings.batching == {"batchable": True, "max_batch_size": 8, "max_latency_ms": 250}
    assert settings.compile is True


def test_forward_batch_is_auto_or_a_size():
    assert Settings.from_env({}).forward_batch == "auto"
    assert Settings.from_env({"VISIONTUNE_FORWARD_BATCH": "8"}).forward_batch == 8


def test_batch_size_one_turns_batching_off():
    assert Settings.from_env({"VISIONTUNE_MAX_BATCH_SIZE": "1"}).batching == {"batchable": False}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VISIONTUNE_MAX_BATCH_SIZE", "0"),
        ("VISIONTUNE_FORWARD_BATCH", "0"),
        ("VISIONTUNE_FORWARD_BATCH", "fastest"),
        ("VISIONTUNE_WORKERS", "two"),
        ("VISIONTUNE_LOW_CONFIDENCE", "1.5"),
        ("VISIONTUNE_MAX_BODY_MB", "-1"),
    ],
)
def test_a_bad_value_names_its_variable(variable, value):
    with pytest.raises(ValidationError, match=variable):
        Settings.from_env({variable: value})


def test_cpu_threads_share_the_cpus_between_workers(monkeypatch):
    monkeypatch.setattr("service.settings.available_cpus", lambda: 8)
    assert Settings(workers=2).cpu_threads() == 4
    assert Settings(workers=16).cpu_threads() == 1
    assert (
        Settings.from_env({"VISIONTUNE_THREADS": "3", "VISIONTUNE_WORKERS": "2"}).cpu_threads() == 3
    )


def test_available_cpus_honours_a_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    quota = tmp_path / "cpu.max"
    quota.write_text("250000 100000\n")
    assert available_cpus(quota) == 3
    quota.write_text("max 100000\n")
    assert available_cpus(quota) == 16
    assert available_cpus(tmp_path / "missing") == 16


@pytest.mark.parametrize(
    ("precision", "device", "gpu_has_bf16", "dtype"),
    [
        ("auto", "cpu", False, None),
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda", False, "float16"),
        ("fp32", "cuda", True, None),
        ("bf16", "cpu", False, "bfloat16"),
        ("bf16", "cuda", True, "bfloat16"),
        ("fp16", "cuda", True, "float16"),
        ("int8", "cpu", False, None),
    ],
)
def test_precision_to_autocast_dtype(precision, device, gpu_has_bf16, dtype):
    settings = Settings.from_env({"VISIONTUNE_PRECISION": precision})
    assert settings.autocast_dtype(device, gpu_has_bf16) == dtype


def test_fp16_without_a_gpu_is_refused_with_the_fix():
    settings = Settings.from_env({"VISIONTUNE_PRECISION": "fp16"})
    settings.check_precision(has_gpu=True)
    with pytest.raises(ValueError, match="VISIONTUNE_PRECISION=fp16 needs a GPU; on CPU use bf16"):
        settings.check_precision(has_gpu=False)
    Settings.from_env({"VISIONTUNE_PRECISION": "bf16"}).check_precision(has_gpu=False)


def test_unknown_precision_is_refused():
    with pytest.raises(ValidationError, match="VISIONTUNE_PRECISION"):
        Settings.from_env({"VISIONTUNE_PRECISION": "int4"})


def test_int8_on_a_gpu_is_refused_with_the_fix():
    settings = Settings.from_env({"VISIONTUNE_PRECISION": "int8"})
    settings.check_precision(has_gpu=False)
    with pytest.raises(ValueError, match="PRECISION=int8 quantizes for CPUs only; on a GPU use"):
        settings.check_precision(has_gpu=True)


@pytest.mark.parametrize(
    ("has_gpu", "has_torchvision", "missing"),
    [(False, True, "a CUDA GPU"), (False, False, "a CUDA GPU"), (True, False, "torchvision")],
)
def test_gpu_decode_without_cuda_or_torchvision_is_refused(has_gpu, has_torchvision, missing):
    settings = Settings.from_env({"VISIONTUNE_GPU_DECODE": "1"})
    with pytest.raises(ValueError, match=f"VISIONTUNE_GPU_DECODE=1 needs {missing}"):
        settings.check_gpu_decode(has_gpu=has_gpu, has_torchvision=has_torchvision)
    settings.check_gpu_decode(has_gpu=True, has_torchvision=True)
    Settings().check_gpu_decode(has_gpu=False, has_torchvision=False)


def test_access_log_and_tracing_are_off_unless_set():
    default = Settings.from_env({}).bentoml_config
    assert default["logging"] == {"access": {"enabled": False}}
    assert default["tracing"] == {"excluded_urls": ".*"}
    on = Settings.from_env({"VISIONTUNE_ACCESS_LOG": "1", "VISIONTUNE_TRACING": "true"})
    assert on.bentoml_config["logging"] == {"access": {"enabled": True}}
    assert "tracing" not in on.bentoml_config


def test_traffic_limits_and_decode_slots(monkeypatch):
    monkeypatch.setattr("service.settings.available_cpus", lambda: 8)
    settings = Settings.from_env({"VISIONTUNE_MAX_CONCURRENCY": "16", "VISIONTUNE_TIMEOUT_S": "5"})
    assert settings.traffic == {"max_concurrency": 16, "timeout": 5.0}
    assert settings.decode_slots() == 8
    assert Settings(workers=3).decode_slots() == 2
    assert Settings(workers=3, decode_threads=1).decode_slots() == 1
    with pytest.raises(ValidationError, match="VISIONTUNE_MAX_CONCURRENCY"):
        Settings.from_env({"VISIONTUNE_MAX_CONCURRENCY": "0"})
