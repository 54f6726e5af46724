"""BENCHMARKS.md, written from the JSON files in ``benchmarks/results/``.

Every figure in the page comes from a result file; the prose around them says
what was measured and how to reproduce it. ``python -m benchmarks.report``
rewrites the page from the files already there.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import REPO, RESULTS

PAGE = REPO / "BENCHMARKS.md"
GPU_COMMAND = "python -m benchmarks.serve_throughput --device cuda --preset vit-base --dtype bf16"


def write(page: Path = PAGE) -> Path:
    parts = [_intro()]
    for name, render in (
        ("train_throughput", _training),
        ("transfer", _transfer),
        ("robustness", _robustness),
        ("serve_throughput", _serving),
    ):
        result = _load(RESULTS / f"{name}.json")
        parts.append(render(result) if result else _missing(name))
    parts.append(_other_serving_runs())
    page.write_text("\n\n".join(part.strip() for part in parts) + "\n")
    return page


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _intro() -> str:
    return """
# Benchmarks

`make bench` runs every script in `benchmarks/` (`python -m benchmarks.run`, about
25 minutes on 2 cores), writes `benchmarks/results/*.json` and rebuilds this page
from them. Each script also runs alone, `--quick` for a short sanity run:
`python -m benchmarks.train_throughput`, `benchmarks.transfer`,
`benchmarks.robustness`, `benchmarks.serve_throughput`. Models are built from configs with random or
project-trained weights and kept in a temporary BentoML store; nothing is
downloaded. A serving run on another device or in another precision
(`--device cuda`, `--dtype bf16`) is kept in its own results file and gets its
own section below.

Compared variants are measured side by side in one run: they alternate in a
rotating order, each is repeated, and the figures are medians over the
repetitions, so that other work on the machine slows all of them alike. Ratios
are only meaningful within one run; absolute figures move with the load on the
machine, which each section records (load average when the script started).
"""


def _machine(result: dict) -> str:
    m = result["machine"]
    threads = m.get("torch_threads_measured", m["torch_threads"])
    return (
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable cores, torch "
        f"{m['versions'].get('torch', '?')} with {threads} intra-op thread(s) in "
        f"the measured processes, load average {m['load_average_at_start'][0]} at the start; "
        f"commit {m['git_commit']}, {result['finished']}, {result['wall_seconds']:.0f}s.\n"
        f"Reproduce: `{result['command']}`"
    )


def _missing(name: str) -> str:
    return f"## {name}\n\nNo result yet: run `python -m benchmarks.{name}`."


def _training(result: dict) -> str:
    lines = [
        "## Training throughput (issue 2)",
        "",
        "Full fine-tuning of the same model, on the same decoded digits, at the same batch "
        "size, by these loops: `visiontune` is `training.train.train()` with `--augment none`; "
        "`augmented` is the same with the default `--augment light` (each batch warped and "
        "colour-jittered by kornia, seeded per batch); `plain` "
        "is a bare forward/backward/AdamW loop over the cached tensor (the limit); "
        "`hf_trainer` is `transformers.Trainer` with the same optimizer, schedule and "
        "batch normalisation, no clipping, logging, evaluation or saving (the peer). Timed: "
        "each epoch's training loop (data from the in-memory cache, normalisation, "
        "forward, backward, optimizer and scheduler steps, progress bar), without the first "
        "epoch (warm-up) and without decoding, validation, calibration or saving. "
        f"{result['rounds']} rounds. Throughput is per CPU-second of the training process "
        "(one torch thread): on a machine shared with other work, wall-clock time mostly "
        "measures how often the scheduler lets the process run, so ratios use CPU time; "
        "wall-clock images/s and their ratio are beside them. Ratios are medians of the "
        "per-round ratios.",
        "",
        "| workload | loop | images per CPU-second | ratio to plain | images/s (wall) | "
        "wall ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for workload, w in result["workloads"].items():
        described = (
            f"{workload} (ViT `{w['preset']}`, {w['image_size']} px, batch {w['batch_size']}, "
            f"{w['train_images_per_epoch']} images/epoch, {w['timed_epochs_per_run']} timed "
            "epoch(s) per run)"
        )
        for loop in [name for name in LOOPS if name in w["ratio_to_plain"]]:
            lines.append(
                f"| {described} | {loop} | {w['images_per_cpu_second'][loop]:.1f} | "
                f"{w['ratio_to_plain'][loop]:.2f} | {w['images_per_second'][loop]:.1f} | "
                f"{w['wall_ratio_to_plain'][loop]:.2f} |"
            )
            described = ""
    lines += ["", "Targets: `visiontune` at least 0.9 of `plain`, `augmented` at least 0.85."]
    for workload, s in result["summary"].items():
        verdict = "met" if s["met"] else "**missed**"
        augmented = ""
        if "augmented_over_plain" in s:
            met = "met" if s["augmented_met"] else "**missed**"
            augmented = (
                f"; augmented {s['augmented_over_plain']:.2f} ({met}, wall-clock "
                f"{s['augmented_over_plain_wall']:.2f})"
            )
        lines.append(
            f"- {workload}: {s['visiontune_over_plain']:.2f} ({verdict}); wall-clock "
            f"{s['visiontune_over_plain_wall']:.2f}; HF Trainer "
            f"{s['hf_trainer_over_plain']:.2f}{augmented}."
        )
    lines += ["", _machine(result), "", _augmentation_library()]
    return "\n".join(lines)


LOOPS = ("visiontune", "augmented", "plain", "hf_trainer")


def _augmentation_library() -> str:
    return (
        "Augmentation library: kornia 0.9 (pure PyTorch; the wheel and its `kornia_rs` "
        "dependency take about 31 MB installed, against 754 MB for torch). torchvision's "
        "`transforms.v2` would do the same work, but no torchvision release installs beside "
        "the pinned torch 2.13.0 CPU wheel: pip resolves `torchvision` to 0.29.1 with "
        "torch 2.14.1 and its CUDA libraries, replacing the pinned build. The `augmented` "
        "row above is what kornia costs in speed."
    )


def _transfer(result: dict) -> str:
    tables = result["table"]
    if "none" not in tables:  # a result file from before augmentation existed
        tables = {"none": tables}
    lines = [
        "## Transfer vs scratch (issue 2)",
        "",
        f"Held-out accuracy on {result['target_task']} (never seen in pretraining) with "
        f"{' or '.join(next(iter(next(iter(tables.values())).values())))} training examples "
        "per class. `linear`, `partial`, `full` and `lora` start from "
        f"the small ViT ({result['image_size']} px) that `make demo` pretrains on "
        f"{result['source_task']}; `scratch (full)` is the same architecture from random "
        f"weights. `visiontune train` for each (at most {result['max_epochs']} epochs, early "
        "stopping on validation); mean ± standard deviation over seeds (each seed draws other "
        "examples). Each row runs without augmentation (`--augment none`) and with the default "
        "(`--augment light`) in the same run.",
    ]
    for augment, table in tables.items():
        lines += ["", f"`--augment {augment}`:", "", *_transfer_table(table)]
    lines += _transfer_margins(tables)
    rates = sorted({(r["row"], r["lr"]) for r in result["runs"]})
    lines += [
        "",
        "Peak learning rates: " + ", ".join(f"{row} {lr:g}" for row, lr in rates) + ".",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _transfer_table(table: dict) -> list[str]:
    columns = list(next(iter(table.values())))
    lines = [
        "| strategy | " + " | ".join(f"{c} per class" for c in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row, cells in table.items():
        rendered = []
        for column in columns:
            cell = cells[column]
            spread = f" ± {cell['std']:.3f}" if cell["seeds"] > 1 else ""
            rendered.append(
                f"{cell['mean']:.3f}{spread} ({cell['seeds']} seed{'s' * (cell['seeds'] > 1)})"
            )
        lines.append(f"| {row} | " + " | ".join(rendered) + " |")
    return lines


def _transfer_margins(tables: dict) -> list[str]:
    """Fine-tuning's lead over scratch, and LoRA's gap to full fine-tuning, per policy."""
    lines = [""]
    for augment, table in tables.items():
        if not {"full", "scratch (full)", "lora"} <= table.keys():
            continue
        full, scratch, lora = table["full"], table["scratch (full)"], table["lora"]
        leads = ", ".join(
            f"{shots} per class {100 * (full[shots]['mean'] - scratch[shots]['mean']):+.1f}"
            for shots in ("5", "20")
            if shots in full
        )
        gap = ""
        if "20" in full:
            gap = (
                f"; LoRA minus full at 20 per class "
                f"{100 * (lora['20']['mean'] - full['20']['mean']):+.1f} points"
            )
        lines.append(
            f"- `--augment {augment}`: full fine-tuning minus scratch: {leads} points{gap}."
        )
    return lines


def _robustness(result: dict) -> str:
    table = result["table"]
    renderings = list(next(iter(table.values())))
    lines = [
        "## Robustness to how a digit is drawn (issue 10)",
        "",
        f"The {result['backbone']} fine-tuned ({result['strategy']}, lr {result['lr']:g}, at "
        f"most {result['max_epochs']} epochs, early stopping) on all ten digits, without and "
        "with the default augmentation, on the same split. Accuracy on the held-out test "
        "digits as stored (8x8, upscaled by the model's preprocessing like training images) "
        "and rendered in other ways: other sizes and resampling filters, shifted one pixel of "
        "the 8x8 grid (mean of 4 directions, vacated edge black), rotated by 10 degrees either "
        "way at 32 px (mean of both), thicker strokes (32 px, 3x3 maximum filter). Mean over "
        f"seeds {', '.join(map(str, result['seeds']))}; in brackets, the difference from native in points.",
        "",
        "| rendering | " + " | ".join(f"`--augment {p}`" for p in table) + " |",
        "| --- |" + " ---: |" * len(table),
    ]
    for name in renderings:
        cells = []
        for policy in table:
            cell = table[policy][name]
            below = "" if name.startswith("native") else f" ({-cell['points_below_native']:+.1f})"
            cells.append(f"{cell['mean']:.3f}{below}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdict = "met" if result["met"] else "**missed**"
    lines += [
        "",
        f"Goal: with the default augmentation every rendering within {result['goal_points']} "
        f"points of native. Worst: {result['light_worst_points_below_native']:.1f} points "
        f"below ({verdict}).",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _serving(result: dict, title: str = "## Serving throughput and latency (issue 3)") -> str:
    image = result["image"]
    serving = result.get("service_serving") or {}
    lines = [
        title,
        "",
        f"ViT `{result['preset']}` at 224x224 (random weights), {result['device']}, "
        f"{result['dtype']} in every measured process; the service as configured by "
        f"default but for its precision ({_describe_serving(serving)}). Requests: one {image['size'][0]}x"
        f"{image['size'][1]} JPEG (about {image['mean_bytes'] // 1024} KiB, {image['distinct']} "
        f"distinct) per `POST /classify`, from one aiohttp client on 127.0.0.1 for every row, "
        f"{result['seconds_per_level']:g}s per row after {result['warmup_seconds']:g}s of "
        f"warm-up, {result['rounds']} rounds. The client runs alone on CPU "
        f"{_cpus(result.get('client_cpus'))}; the servers and the limit are pinned to CPU "
        f"{_cpus(result.get('server_cpus'))} and size their torch threads from it, so every "
        "measured process gets the same cores and the load generator does not compete with "
        "them.",
        "",
        "In-process limit (`contract.images` decoding on a thread per server core, "
        "`Preprocessing`, one forward per batch, no HTTP):",
        "",
        "| batch size | images/s |",
        "| ---: | ---: |",
    ]
    for size, rate in result["limit"]["images_per_second"].items():
        lines.append(f"| {size} | {rate:.1f} |")
    lines += [
        "",
        "Servers (client-side latency of each request; medians over rounds, and the range "
        "of images/s over rounds: the rotating order puts each level after a different one, "
        "so a wide range marks a row that depends on what the server did just before):",
        "",
        "| server | concurrency | images/s | (rounds: min-max) | p50 ms | p95 ms | p99 ms | "
        "requests | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "service": "service, adaptive batching",
        "service_unbatched": "service, batching off (`VISIONTUNE_MAX_BATCH_SIZE=1`)",
        "baseline": "baseline: FastAPI + `pipeline()`, one at a time",
    }
    for name, levels in result["servers"].items():
        label = names.get(name, name)
        for c, row in levels.items():
            failures = sum(row["failures"].values())
            rates = [run["images_per_second"] for run in result["servers_by_round"][name][c]]
            lines.append(
                f"| {label} | {c} | {row['images_per_second']:.1f} | "
                f"{min(rates):.1f}-{max(rates):.1f} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['requests']} | {failures} |"
            )
            label = ""
    lines += _breakdown_table(result)
    targets = result["targets"]
    c = targets["concurrency"]
    best = result["limit"]["best_batch_size"]
    lines += ["", f"Targets at concurrency {c}:", ""]
    described = {
        "service_over_best_limit": f"service / best in-process limit (batch {best})",
        "service_over_unbatched": "service / service with batching off",
        "service_over_baseline": "service / FastAPI + pipeline baseline",
    }
    lines += [
        "| ratio | measured | target | | ceiling set by the limit |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for key, text in described.items():
        t = targets[key]
        ceiling = f"{t['ceiling']:.2f}" if "ceiling" in t else ""
        verdict = "met" if t["met"] else "**missed**"
        lines.append(f"| {text} | {t['value']:.2f} | {t['target']:g} | {verdict} | {ceiling} |")
    lines += [
        "",
        "Ceilings: the best in-process limit over the limit at batch 1 (what batching can "
        "add at most over an unbatched server that reached the batch-1 limit), and over the "
        "baseline as measured (what any server could reach over it on these cores).",
    ]
    lines += ["", _machine(result)]
    return "\n".join(lines)


def _breakdown_table(result: dict) -> list[str]:
    """Where each server's CPU time goes per image (medians over rounds)."""
    rows = [
        (name, c, row["server"])
        for name, levels in result["servers"].items()
        for c, row in levels.items()
        if row.get("server", {}).get("cpu_ms_per_image") is not None
    ]
    if not rows:
        return []
    lines = [
        "",
        "Where the servers' time goes, per image served: CPU time of all the server's "
        "processes over the measured window; decoding and inference are the wall-clock "
        "seconds the service itself records (`visiontune_preprocess_seconds`, "
        "`visiontune_inference_seconds`); other = CPU minus both: HTTP, multipart parsing, "
        "BentoML's dispatcher, validation, JSON, metrics. With one request in flight the "
        "three follow each other; with many, decoding and HTTP work run in other threads "
        "on the same core while a batch is in the model, so the wall-clock parts overlap "
        "and other shrinks towards zero.",
        "",
        "| server | concurrency | CPU ms/image | decode ms (wall) | inference ms (wall) | "
        "other ms | "
        "mean batch | CPU busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value, pattern="{:.1f}"):
        return pattern.format(value) if value is not None else ""

    for name, c, server in rows:
        lines.append(
            f"| {name} | {c} | {cell(server.get('cpu_ms_per_image'))} | "
            f"{cell(server.get('decode_ms_per_image'))} | "
            f"{cell(server.get('inference_ms_per_image'))} | "
            f"{cell(server.get('other_ms_per_image'))} | "
            f"{cell(server.get('mean_batch_size'))} | "
            f"{cell(server.get('cpu_busy_share'), '{:.0%}')} |"
        )
    return lines


def _cpus(cpus: list[int] | None) -> str:
    return ",".join(map(str, cpus)) if cpus else "(not pinned)"


def _describe_serving(serving: dict) -> str:
    if not serving:
        return "as reported by `GET /model`"
    return ", ".join(f"{key} {value}" for key, value in serving.items())


def _other_serving_runs() -> str:
    """A section per serving run on another device or precision; the GPU one until it is run."""
    found = sorted(RESULTS.glob("serve_throughput-*.json"))
    found = [path for path in found if not path.name.endswith(".quick.json")]
    sections = [_serving(_load(path), title=_run_title(path)) for path in found]
    if not any(path.name.startswith("serve_throughput-cuda-") for path in found):
        sections.append(GPU_PENDING)
    return "\n\n".join(sections)


def _run_title(path: Path) -> str:
    _, device, *_, dtype = path.stem.split("-")
    where = "a GPU" if device == "cuda" else f"{device.upper()} in {dtype}"
    return f"## Serving on {where} ({path.stem})"


GPU_PENDING = f"""
## Serving on a GPU

Pending: no session with a GPU has run it yet. The target there is the service
at concurrency 32 reaching at least 0.7 of the in-process limit with ViT-B/16 in
bf16. On a machine with CUDA, run as is:

```bash
make install && .venv/bin/pip install -e '.[bench]'
.venv/bin/{GPU_COMMAND}
.venv/bin/python -m benchmarks.report   # adds the GPU section to this page
```
"""


if __name__ == "__main__":
    print(f"wrote {write()}")
