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
        ("input_size", _input_size),
        ("transfer", _transfer),
        ("robustness", _robustness),
        ("serve_throughput", _serving),
        ("serve_profile", _profile),
        ("cpu_precision", _cpu_precision),
        ("predict_packing", _packing),
        ("loader", _loader),
        ("load", _reliability),
        ("score_throughput", _scoring),
        ("runtimes", _runtimes),
        ("live_traffic", _live_traffic),
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
45 minutes on 2 cores), writes `benchmarks/results/*.json` and rebuilds this page
from them. Each script also runs alone, `--quick` for a short sanity run:
`python -m benchmarks.train_throughput`, `benchmarks.input_size`, `benchmarks.transfer`,
`benchmarks.robustness`, `benchmarks.serve_throughput`, `benchmarks.serve_profile`,
`benchmarks.cpu_precision`, `benchmarks.predict_packing`, `benchmarks.loader`, `benchmarks.load`,
`benchmarks.score_throughput`, `benchmarks.runtimes`, `benchmarks.live_traffic`. Models are built from configs with random or
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
        "## Training throughput",
        "",
        "Full fine-tuning of the same model, on the same decoded digits, at the same batch "
        "size, by these loops: `visiontune` is `training.train.train()` with `--augment none`; "
        "`augmented` is the same with the default `--augment light` (each batch warped by one "
        "`grid_sample`, colour-jittered by kornia, a share of its images blurred or given "
        "noise, seeded per batch); `plain` "
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
            f"{workload} ({_model_name(w['preset'])}, {w['image_size']} px, "
            f"batch {w['batch_size']}, "
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
        "dependency take about 31 MB installed, against 754 MB for torch) for colour jitter "
        "and the `strong`, `randaugment` and `trivialaugment` policies. The light policy's "
        "affine warp is torch's `affine_grid` and `grid_sample` with its parameters drawn in "
        "one call (`training.augment.AffineWarp`): kornia's `RandomAffine` spent 0.6 ms a "
        "call on a batch of 16 images of 16 px, for 0.02 ms of resampling, and held this "
        "loop to 0.83 of plain. torchvision's "
        "`transforms.v2` would do the same work, but no torchvision release installs beside "
        "the pinned torch 2.13.0 CPU wheel: pip resolves `torchvision` to 0.29.1 with "
        "torch 2.14.1 and its CUDA libraries, replacing the pinned build. The `augmented` "
        "row above is what augmentation costs in speed."
    )


def _input_size(result: dict) -> str:
    rates, speed = result["images_per_second"], result["speed_vs_largest"]
    sizes = list(rates["train"])
    largest = sizes[-1]
    lines = [
        "## Input size",
        "",
        "EfficientNet-Lite0 (ImageNet weights, 10-class head) at each input size, sizes "
        f"alternating round by round, batch {result['batch_size']}: images per second of "
        f"full fine-tuning steps and of inference, and the speed relative to {largest} px "
        "(EfficientNet's own size). Convolutional backbones take any size, so training "
        "images much smaller than the input train at about three times their size, rounded "
        "up to 32 (`training.model.input_size_for`): Fashion-MNIST's 28 px photos at 96 px. "
        "The accuracy reached at that size, and at 64 px, is the next section's.",
        "",
        "| input | training images/s | vs "
        + f"{largest} px | inference images/s | vs {largest} px |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        lines.append(
            f"| {size} px | {rates['train'][size]:.1f} | {speed['train'][size]:.1f}x "
            f"| {rates['inference'][size]:.1f} | {speed['inference'][size]:.1f}x |"
        )
    lines += ["", _machine(result)]
    return "\n".join(lines)


def _transfer(result: dict) -> str:
    table, defaults = result["table"], result["defaults"]
    seeds = max((cell["seeds"] for cells in table.values() for cell in cells.values()), default=0)
    sizes = {run["image_size"][0] for run in result["runs"] if run["row"] == "full"}
    size = "/".join(map(str, sorted(sizes))) or "?"
    lines = [
        "## Transfer vs scratch",
        "",
        f"Held-out accuracy on {result['data']} ({result['eval_per_class']} test photos per "
        f"class of the published test split; {result['val_per_class']} per class validate each "
        "epoch) after training on 10 or 100 photos per class. "
        f"`linear`, `partial`, `full` and `lora` fine-tune {result['backbone']}; `scratch "
        "(full)` trains the same network from random weights. Each run is `visiontune train` "
        f"with the defaults (at most {defaults['epochs']} epochs, warm-up then a cosine "
        f"learning rate, early stopping after {defaults['patience']} epochs without progress, "
        f"`--augment {defaults['augment']}`, batch {defaults['batch_size']}, small images at "
        f"three times their size: {size} px) and its strategy's defaults: the peak learning rate "
        "and, where the strategy keeps one, the decay of an exponential moving average of "
        "the weights (validated each epoch beside the weights themselves); mean ± "
        f"standard deviation over {seeds} seeds (each seed draws other photos and another "
        "head), and the mean wall-clock time of a run (one torch thread, evaluation "
        "included). The random-weight baseline trains every epoch: its batch norms' running "
        "statistics need more steps than early stopping gives a few-shot run."
        + (
            " `full (64 px)` leaves one default: the input at 64 px, about twice the photos' "
            "size (EfficientNet's stride of 32 leaves a 2x2 feature map there, 3x3 at 96 px)."
            if table.get("full (64 px)")
            else ""
        )
        + (
            " `full (64 px, 30 epochs)` also trains a 30-epoch schedule to its end (no early "
            "stopping): whether a longer schedule makes up for the smaller input."
            if table.get("full (64 px, 30 epochs)")
            else ""
        ),
        "",
        *_transfer_table(result),
        "",
    ]
    names = {
        "full_at_100": ("full fine-tuning at 100 per class", "≥ {:.2f}", "{:.3f}"),
        "full_minus_scratch_at_10": ("full minus scratch at 10 per class", "≥ +{:.0%}", "{:+.1%}"),
        "lora_gap_at_100": ("full minus LoRA at 100 per class", "≤ {:.0%}", "{:+.2%}"),
    }
    for key, verdict in result["verdicts"].items():
        label, target, value = names[key]
        met = "met" if verdict["met"] else "**missed**"
        lines.append(
            f"- {label}: {value.format(verdict['value'])} "
            f"(target {target.format(result['targets'][key])}, {met})"
        )
    lines += ["", *_epochs_run(result["runs"]), *_range_tests(result.get("lr_find"))]
    lines += ["", *_other_machines(result), _machine(result)]
    return "\n".join(lines)


def _transfer_table(result: dict) -> list[str]:
    table, probe = result["table"], result.get("probe")
    columns = sorted({c for cells in table.values() for c in cells}, key=int)
    rates = {run["row"]: run["lr"] for run in result["runs"]}
    averages = {run["row"]: run.get("ema_decay") for run in result["runs"]}
    inputs: dict[str, set] = {}
    for run in result["runs"]:
        inputs.setdefault(run["row"], set()).add(run["image_size"][0])
    header = ["strategy", "input", "peak lr", "weight average"]
    header += [f"{c} per class" for c in columns]
    if probe:
        header.append(f"all {probe['train_images']:,}")
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for row, cells in table.items():
        size = "/".join(f"{side} px" for side in sorted(inputs.get(row, ())))
        rendered = [row, size or "-", f"{rates[row]:g}" if row in rates else "-"]
        rendered.append(f"EMA {averages[row]:g}" if averages.get(row) else "none")
        for column in columns:
            cell = cells.get(column)
            if cell is None:
                rendered.append("-")
                continue
            seconds = f"{cell['seconds']:.0f} s"
            if cell["seeds"] > 1:
                rendered.append(f"{cell['mean']:.3f} ± {cell['std']:.3f} ({seconds})")
            else:
                rendered.append(f"{cell['mean']:.3f} (one seed, {seconds})")
        lines.append("| " + " | ".join(rendered + (["-"] if probe else [])) + " |")
    if probe:
        cells = ["linear probe (frozen features, logistic regression)"]
        cells += [f"{probe['image_size'][0]} px", f"C={probe['C']:g}", "-"]
        cells += ["-"] * len(columns)
        cells.append(f"{probe['test_accuracy']:.3f} ({probe['seconds']:.0f} s)")
        lines += [
            "| " + " | ".join(cells) + " |",
            "",
            f"The linear probe: the frozen ImageNet backbone's pooled features of all "
            f"{probe['train_images']:,} training photos at {probe['image_size'][0]} px (no "
            "augmentation), standardised, and scikit-learn's multinomial logistic regression, "
            "its inverse strength C chosen on the validation split ("
            + ", ".join(f"C={c}: {a:.3f}" for c, a in probe["val_accuracy_by_C"].items())
            + ") and refitted on all of them; one run (nothing in it depends on a seed), "
            f"{probe['feature_seconds']:.0f} s of it reading the features.",
        ]
    return lines


def _other_machines(result: dict) -> list[str]:
    """Rows that --resume kept from another CPU: their times are not comparable."""
    here = result["machine"]["cpu"]
    found: dict[tuple, set] = {}
    for run in result["runs"]:
        if run["cpu"] != here:
            found.setdefault((run["cpu"], run.get("commit")), set()).add(
                f"{run['row']} at {run['per_class']}"
            )
    return [
        f"Measured on {cpu}{f' at commit {commit}' if commit else ''}, so their times "
        f"compare only with each other: {', '.join(sorted(rows))}.\n"
        for (cpu, commit), rows in found.items()
    ]


def _epochs_run(runs: list[dict]) -> list[str]:
    """How many epochs each row ran before early stopping, per photos per class."""
    found = {}
    for run in runs:
        found.setdefault((run["row"], run["per_class"]), []).append(run["epochs_run"])
    if not found:
        return []
    cells = [f"{row} at {shots}: {', '.join(map(str, e))}" for (row, shots), e in found.items()]
    return ["", "Epochs each run trained (seed by seed): " + "; ".join(cells) + "."]


def _range_tests(found: dict | None) -> list[str]:
    """`visiontune lr-find`'s suggestions per strategy beside the default rate."""
    if not found:
        return []
    lines = [
        "",
        "`visiontune lr-find` (100 steps from 1e-7 to 10, the same data, augmentation and "
        "batch size, 100 photos per class, seed 0) for each strategy, beside its default:",
        "",
        "| strategy | default peak lr | steepest descent | minimum / 10 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row, found_row in found.items():
        if "error" in found_row:
            lines.append(f"| {row} | {found_row['default_lr']:g} | {found_row['error']} | |")
            continue
        lines.append(
            f"| {row} | {found_row['default_lr']:g} | {found_row['steepest']:.1e} | "
            f"{found_row['minimum_tenth']:.1e} |"
        )
    return lines


def _robustness(result: dict) -> str:
    table = result["table"]
    corruptions = list(next(iter(table.values())))
    lines = [
        "## Robustness to common corruptions",
        "",
        f"{result['backbone']} fine-tuned ({result['strategy']}, the defaults) on "
        f"{result['data']}, without and with the default augmentation, on the same photos. "
        "Accuracy on the same held-out test photos clean and corrupted: JPEG at quality 20, "
        "Gaussian blur (radius 1 px), contrast scaled to 40%, Gaussian noise (10% of the "
        "range), a 2x nearest-neighbour upscale, and 2-px shifts (mean of 4 directions). In "
        f"brackets, the share of clean accuracy. Seeds: {', '.join(map(str, result['seeds']))}."
        + _run_commits(result),
        "",
        "| corruption | " + " | ".join(f"`--augment {p}`" for p in table) + " |",
        "| --- |" + " ---: |" * len(table),
    ]
    for name in corruptions:
        cells = []
        for policy in table:
            cell = table[policy][name]
            share = "" if name == "clean" else f" ({cell['of_clean']:.2f})"
            cells.append(f"{cell['mean']:.3f}{share}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdict = "met" if result["met"] else "**missed**"
    lines += [
        "",
        f"Goal: with the default augmentation every corruption at least "
        f"{result['goal_of_clean']} of clean accuracy. Worst: "
        f"{result['light_worst_of_clean']:.2f} ({verdict}).",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _run_commits(result: dict) -> str:
    """Which commit each policy's runs came from, where they differ (a rerun of one policy
    keeps the other's runs)."""
    commits = {}
    for run in result["runs"]:
        commits.setdefault(run["policy"], set()).add(run.get("commit", "?"))
    if len({c for found in commits.values() for c in found}) < 2:
        return ""
    named = "; ".join(f"`--augment {p}` at {', '.join(sorted(c))}" for p, c in commits.items())
    return (
        f" Runs: {named} (`--policies` reran one policy; nothing the other's runs do changed "
        "between the commits)."
    )


def _serving(result: dict, title: str = "## Serving throughput and latency") -> str:
    image = result["image"]
    serving = result.get("service_serving") or {}
    lines = [
        title,
        "",
        f"{_model_name(result['preset'])} at 224x224, {result['device']}, "
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
        "bentoml_floor": "BentoML floor: the same decoding and model behind a bare batchable API",
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
    if title == "## Serving throughput and latency":
        lines += _by_model(result)
    lines += _breakdown_table(result)
    contended = _contended(result)
    if contended:
        lines += ["", contended]
    targets = result["targets"]
    c = targets["concurrency"]
    best = result["limit"]["best_batch_size"]
    lines += ["", f"Targets at concurrency {c}:", ""]
    described = {
        "service_over_best_limit": f"service / best in-process limit (batch {best})",
        "service_over_unbatched": "service / service with batching off",
        "service_over_baseline": "service / FastAPI + pipeline baseline",
        "other_ms_per_image": "service's other CPU ms per image, at concurrency 1 (at most)",
    }
    lines += [
        "| ratio | measured | target | | ceiling set by the limit | BentoML floor |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for key, text in described.items():
        if key not in targets:
            continue
        t = targets[key]
        ceiling = f"{t['ceiling']:.2f}" if "ceiling" in t else ""
        floor = f"{t['floor']:.2f}" if "floor" in t else ""
        verdict = "met" if t["met"] else "**missed**"
        verdict = "not judged (host contended)" if contended else verdict
        lines.append(
            f"| {text} | {t['value']:.2f} | {t['target']:g} | {verdict} | {ceiling} | {floor} |"
        )
    lines += [
        "",
        "Ceilings: the best in-process limit over the limit at batch 1 (what batching can "
        "add at most over an unbatched server that reached the batch-1 limit), and over the "
        "baseline as measured (what any server could reach over it on these cores).",
    ]
    if "bentoml_floor" in result["servers"]:
        lines[-1] += (
            " BentoML floor: the same measure for `benchmarks/floor_service.py`, the same "
            "decoding and model behind a bare batchable BentoML API with none of the "
            "service's input checks, metrics or middlewares: what BentoML's own request path "
            "spends per image outside decoding and the forward pass, which no service built "
            "on it goes below. Against the limit it is no strict bound (the service decodes in "
            "a thread of its own while a batch runs, the floor within the batch), and the "
            "rounds' spread on a shared host is wider than the gap between the two."
        )
    lines += ["", _machine(result)]
    return "\n".join(lines)


def _model_name(preset: str) -> str:
    if preset == "efficientnet-lite0":
        return "EfficientNet-Lite0 (ImageNet weights, a new 10-class head; a real CNN)"
    return f"ViT `{preset}` (random weights)"


def _by_model(result: dict) -> list[str]:
    """The default run's model beside the other models' CPU fp32 runs, if there are any."""
    others = [
        _load(path)
        for path in sorted(RESULTS.glob("serve_throughput-cpu-*-fp32.json"))
        if _load(path)["preset"] != result["preset"]
    ]
    if not others:
        return []
    c = str(result["targets"]["concurrency"])
    lines = [
        "",
        "By model (CPU, fp32; each model's own run, its section below for the rest):",
        "",
        "| model | best in-process limit, images/s | service at concurrency "
        f"{c}, images/s | of the limit | p50 ms at concurrency 1 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for run in [result, *others]:
        best = run["limit"]["best_batch_size"]
        limit = run["limit"]["images_per_second"][str(best)]
        service = run["servers"]["service"]
        rate = service[c]["images_per_second"]
        p50 = service["1"]["p50_ms"] if "1" in service else float("nan")
        lines.append(
            f"| {_model_name(run['preset'])} | {limit:.1f} (batch {best}) | {rate:.1f} | "
            f"{rate / limit:.2f} | {p50:.0f} |"
        )
    return lines


CONTENDED_BUSY_SHARE = 0.5


def _contended(result: dict) -> str:
    """A warning when the servers got too little of their cores for the run to judge anything."""
    busy = [
        row["server"]["cpu_busy_share"]
        for row in result["servers"].get("service", {}).values()
        if "cpu_busy_share" in row.get("server", {})
    ]
    if not busy or min(busy) >= CONTENDED_BUSY_SHARE:
        return ""
    load = result["machine"]["load_average_at_start"][0]
    return (
        f"**This run does not measure the service.** Other work on the machine (load average "
        f"{load} at the start) left the servers {min(busy):.0%}-{max(busy):.0%} of their core "
        "while loaded, so rates are a fraction of what these cores serve, the limit and the "
        "servers saw different loads, and the wall-clock parts of the breakdown exceed the CPU "
        "time (other < 0). The targets are not judged from it; run "
        "`python -m benchmarks.serve_throughput` again on a quiet machine."
    )


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
        "mean batch | CPU busy | cores used | images/s per core |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
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
            f"{cell(server.get('cpu_busy_share'), '{:.0%}')} | "
            f"{cell(server.get('cores_used'), '{:.2f}')} | "
            f"{cell(server.get('images_per_core_second'))} |"
        )
    return lines


def _loader(result: dict) -> str:
    policy = result["policy"]
    width, height = result["photo_size"]
    lines = [
        "## Data loading for big folders",
        "",
        f"A generated folder of {result['files']:,} JPEGs ({width}x{height} photo crops, ten "
        "class folders) read by `training.data`'s loader as `visiontune train` reads it, at a "
        f"DINOv2-style policy (shortest edge {policy['resize_shortest_edge']}, centre crop "
        f"{policy['crop'][0]}, bicubic), batches of {result['batch_size']}. Every variant reads "
        f"the same {result['images_per_variant']} files, with a fresh loader as each training "
        "epoch makes one (worker start-up counted). `cached` is a set under the in-memory "
        "cache limit: decoded once up front (4 threads), then every epoch comes from memory. "
        "`streaming` is a set past that limit: each epoch decodes from disk in `--workers` "
        "processes (0: in the training process), with JPEG draft decoding (at no less than "
        f"{policy['draft_size'][0]}x{policy['draft_size'][1]}, twice the resize) or a full "
        "decode. Images per CPU-second count this process and its workers together: the "
        "decoding work itself; images per wall-clock second also measure how much of the cores "
        f"the machine had free. Medians over {result['rounds']} round(s).",
        "",
        "| variant | workers | JPEG draft | images/s (wall) | images per CPU-second |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for phase in ("decode", "epoch"):
        r = result["cached"][phase]
        name = "cached: up-front decode" if phase == "decode" else "cached: each epoch"
        lines.append(
            f"| {name} | - | yes | {r['images_per_second']:.1f} | {r['images_per_cpu_second']:.1f} |"
        )
    for name, r in result["streaming"].items():
        lines.append(
            f"| {name} | {r['workers']} | {'yes' if r['draft'] else 'no'} | "
            f"{r['images_per_second']:.1f} | {r['images_per_cpu_second']:.1f} |"
        )
    streaming = result["streaming"]
    gain = (
        streaming["streaming-w0-draft"]["images_per_cpu_second"]
        / streaming["streaming-w0-full"]["images_per_cpu_second"]
    )
    lines += [
        "",
        f"JPEG draft decoding does {gain:.1f}x the images per CPU-second of a full decode here. "
        "Workers decode beside the training loop, a core each: they raise images/s only where "
        "cores are free, which on this shared machine (load average below) they were not.",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _cpus(cpus: list[int] | None) -> str:
    return ",".join(map(str, cpus)) if cpus else "(not pinned)"


def _describe_serving(serving: dict) -> str:
    if not serving:
        return "as reported by `GET /model`"
    return ", ".join(f"{key} {value}" for key, value in serving.items())


def _reliability(result: dict) -> str:
    s, b, k = result["sustained"], result["burst"], result["worker_killed"]
    memory = s["memory"]
    load = result["load_average"]
    lines = [
        "## Reliability: sustained load, a burst, a worker killed",
        "",
        f"The service as configured by default (one worker, `VISIONTUNE_MAX_CONCURRENCY` "
        f"{result['max_concurrency']}) serving {result['model']}; closed-loop clients on the "
        "same machine each post one digit PNG to `/classify`, wait for the answer and post "
        "again (a client answered 503 waits its `Retry-After`); `/livez` is polled every "
        "0.25 s throughout. Latencies are the clients' and count answered (200) requests. "
        f"The load average went from {load['start'][0]:.1f} to {load['end'][0]:.1f} during "
        "the run, on 2 cores shared with other work: absolute latencies move with it, the "
        "ratios less so.",
        "",
        "| scenario | requests | answers | p50 ms | p95 ms | p99 ms | p99 / p50 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        _load_row(f"sustained: {s['clients']} clients, {s['seconds']:g} s", s),
        _load_row("burst: 8 clients before", b["before"]),
        _load_row(f"burst: {b['clients']} clients for 10 s", b["burst"]),
        _load_row("burst: 8 clients after", b["after"]),
        _load_row(f"worker killed: 2 workers, {k['clients']} clients, {k['seconds']:g} s", k),
        "",
        f"- Sustained: {s['server_503']:g} answers 503 (the clients never exceed the limit); "
        f"memory (unique set size of the server's processes) {memory['first_mb']:.0f} MB in "
        f"the first {memory['part_seconds']:g} s and {memory['last_mb']:.0f} MB in the last, "
        f"{memory['growth']:+.1%}; slowest `/livez` {s['livez_max_ms']:.0f} ms, "
        f"{s['livez_failures']} failed.",
        f"- Burst: past the limit the service answers 503 at once "
        f"(`Retry-After` on every one: {b['retry_after_on_every_503']}); slowest `/livez` "
        f"{b['livez_max_ms']:.0f} ms, {b['livez_failures']} failed; the median latency was "
        f"back within 1.5x of before the burst in the first "
        f"{b['recovered_within_s'] or 'never'} s after it.",
        f"- Worker killed (SIGKILL at {k['killed_at_s']:.0f} s): the requests it held lost "
        f"their connection ({len(k['lost_after_kill_s'])}, at "
        f"{_seconds(k['lost_after_kill_s'])} s from the kill), every other request was "
        f"answered, the slowest in {k['slowest_ms']:.0f} ms; in the last 5 s "
        f"{_statuses(k['last_5s'])}; `bentoml_service_request_in_progress` after the run: "
        f"{k['in_progress_after']:g}.",
        "",
        "Where a latency tail under sustained load comes from: a full garbage collection "
        "stops the worker while it walks every tracked object. The service freezes its "
        "start-up heap (the model, torch, transformers, BentoML: 460,000 objects) after the "
        "warm-up, and disarms the timeout of each request once it is answered (BentoML's "
        "kept every request's context alive for the whole 60 s timeout), so a full "
        "collection walks about 20,000 objects (`service/classifier.py`, `service/limits.py`).",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _load_row(name: str, summary: dict) -> str:
    ratio = summary["p99_ms"] / summary["p50_ms"]
    return (
        f"| {name} | {summary['requests']} | {_statuses(summary)} | {summary['p50_ms']:.0f} | "
        f"{summary['p95_ms']:.0f} | {summary['p99_ms']:.0f} | {ratio:.2f} |"
    )


def _statuses(summary: dict) -> str:
    return ", ".join(f"{count} x {status}" for status, count in summary["statuses"].items())


def _seconds(values: list[float]) -> str:
    return f"{min(values):+.1f} to {max(values):+.1f}" if values else "none"


def _other_serving_runs() -> str:
    """A section per serving run on another device or precision; the GPU one until it is run."""
    found = sorted(RESULTS.glob("serve_throughput-*.json"))
    found = [path for path in found if not path.name.endswith(".quick.json")]
    sections = [_serving(_load(path), title=_run_title(path)) for path in found]
    if not any(path.name.startswith("serve_throughput-cuda-") for path in found):
        sections.append(GPU_PENDING)
    return "\n\n".join(sections)


def _run_title(path: Path) -> str:
    result = _load(path)
    device, dtype = result["device"], result["dtype"]
    where = f"a GPU in {dtype}" if device == "cuda" else f"{device.upper()} in {dtype}"
    decode = ", JPEGs decoded on the GPU" if result.get("gpu_decode") else ""
    model = "EfficientNet-Lite0" if result["preset"] == "efficientnet-lite0" else "ViT"
    return f"## Serving {model} on {where}{decode} ({path.stem})"


GPU_PENDING = f"""
## Serving on a GPU

Pending: no machine with a GPU has run it yet. What runs there: ViT-B/16 at 224 in
bf16 and DeiT-tiny in bf16, each with CPU decoding and with nvJPEG decoding
(`VISIONTUNE_GPU_DECODE=1`), at concurrency 1-256: the in-process limit including
decoding, the service with adaptive batching, batching off, and the baseline, with
the CPU cores each server used and its images/s per core. The target is the service
at concurrency 32 reaching at least 0.8 of the in-process limit including decoding.
On a machine with CUDA, one script runs the GPU tests, every configuration and this
page's rebuild (`QUICK=1` for a one-minute check of the setup first):

```bash
make install && .venv/bin/pip install -e '.[bench]' 'torchvision==0.28.0'
benchmarks/gpu_check.sh
```

One configuration alone: `.venv/bin/{GPU_COMMAND} --concurrency 1,8,32,64,128,256`.
"""


def _profile(result: dict) -> str:
    """Where the service's CPU time per image goes, by component (py-spy)."""
    runs = result["runs"]
    names = {
        "bentoml_defaults": "access log and tracing on (BentoML's defaults)",
        "service": "the service's defaults",
        "bentoml_floor": "BentoML floor (no service code)",
    }
    components = list(dict.fromkeys(c for run in runs.values() for c in run["ms_per_image"]))
    lines = [
        "## Where the service's CPU time goes (per-request overhead)",
        "",
        f"`python -m benchmarks.serve_profile`: the serving benchmark's model and request "
        f"(one 640x480 JPEG per `POST /classify`, concurrency {result['concurrency']}, fp32), "
        f"sampled by py-spy (on-CPU samples of every server process, 100 Hz, "
        f"{result['seconds']:g}s per configuration). The server's CPU time per image over the "
        "window is split by the share of samples in each component (a sample counts for the "
        "innermost of its frames that belongs to one, so a middleware counts only its own work). What the service's "
        "defaults leave out: BentoML's access log (`VISIONTUNE_ACCESS_LOG` turns it on) and "
        "the OpenTelemetry middleware's span per request (`VISIONTUNE_TRACING`); every run "
        "serve through uvicorn on httptools and uvloop (project dependencies), whose HTTP "
        "parsing and event loop are C.",
        "",
        "| component | " + " | ".join(names.get(n, n) for n in runs) + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for component in components:
        cells = [f"{run['ms_per_image'].get(component, 0.0):.2f}" for run in runs.values()]
        lines.append(f"| {component} (ms/image) | " + " | ".join(cells) + " |")
    for key, label, pattern in (
        ("cpu_ms_per_image", "CPU ms per image", "{:.1f}"),
        ("images_per_second", "images/s while sampled", "{:.1f}"),
    ):
        cells = [pattern.format(run[key]) for run in runs.values()]
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    overhead = {
        name: sum(
            ms
            for component, ms in run["ms_per_image"].items()
            if component not in ("forward pass", "decoding and resizing")
        )
        for name, run in runs.items()
    }
    service_ms = runs.get("service", {}).get("cpu_ms_per_image", 0.0)
    lines += [
        "",
        "Overhead outside decoding and the forward pass, ms per image: "
        + ", ".join(f"{names.get(n, n)} {ms:.2f}" for n, ms in overhead.items())
        + ". The largest frames within each component of the service's own run, ms per "
        "image: "
        + "; ".join(
            f"{component}: "
            + ", ".join(f"`{frame}` {share * service_ms:.2f}" for frame, share in frames.items())
            for component, frames in runs.get("service", {}).get("top_frames", {}).items()
            if component not in ("forward pass", "decoding and resizing")
        )
        + ".",
        "",
        f"Reproduce: `{result['command']}`",
    ]
    return "\n".join(lines)


def _cpu_precision(result: dict) -> str:
    """fp32, bf16, int8 and compiled: speed on the serving model, accuracy on the digits."""
    accuracy, speed = result["accuracy"], result["speed"]
    rates = speed["images_per_second"]
    lines = [
        "## CPU precision and torch.compile",
        "",
        f"`python -m benchmarks.cpu_precision`. This CPU has native bf16: "
        f"{'yes' if result['native_bf16'] else 'no'}. Speed: the serving benchmark's model "
        f"(DeiT-tiny size, 224 px) through `contract.predictor.Predictor` as the service sets "
        f"it up, one torch thread on CPU {_cpus(result['cpus'])}, medians over "
        f"{result['rounds']} rounds of {result['seconds_per_measure']:g}s; compiled variants "
        "include the service's warm-up (a full batch, then one of 1) in their compile time.",
        "",
        "| variant | batch 1 images/s | batch 32 images/s | vs fp32 at 32 | compile s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    base = rates["fp32"]["32"]
    for variant, row in rates.items():
        compile_s = speed["compile_seconds"].get(variant)
        lines.append(
            f"| {variant} | {row['1']:.1f} | {row['32']:.1f} | {row['32'] / base:.2f}x | "
            f"{f'{compile_s:.0f}' if compile_s is not None else ''} |"
        )
    lines += [
        "",
        f"Accuracy: a small ViT (16 px) trained on the digits, scored on the "
        f"{accuracy['test_images']} held-out test images:",
        "",
        "| precision | accuracy | top-1 agreement with fp32 | largest score change |",
        "| --- | ---: | ---: | ---: |",
    ]
    for variant, row in accuracy["variants"].items():
        lines.append(
            f"| {variant} | {row['accuracy']:.4f} | {row['top1_agreement_with_fp32']:.2%} | "
            f"{row['max_score_change']:.4f} |"
        )
    lines += [
        "",
        f"The warm-up check of `VISIONTUNE_PRECISION=auto` on this model: {accuracy['auto_check']}.",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _packing(result: dict) -> str:
    """visiontune predict: files per second, one image per request vs packed."""
    described = {
        "one_per_request": "one file per request, 4 at a time",
        "packed": "packed: 4 requests at a time that fill one batch (the default)",
    }
    rates = result["files_per_second"]
    lines = [
        "## `visiontune predict` on a folder",
        "",
        f"`python -m benchmarks.predict_packing`: {result['files']} JPEGs (640x480) in one "
        "folder classified by `visiontune predict FOLDER --json` against the service with its "
        f"defaults but a 10-minute queue limit (the serving benchmark's model, fp32), median of {result['rounds']} rounds:",
        "",
        "| client | options | files/s | vs one per request |",
        "| --- | --- | ---: | ---: |",
    ]
    for way, rate in rates.items():
        lines.append(
            f"| {described.get(way, way)} | `{result['ways'][way]}` | {rate:.1f} | "
            f"{rate / rates['one_per_request']:.2f}x |"
        )
    lines += ["", f"Reproduce: `{result['command']}`"]
    return "\n".join(lines)


def _scoring(result: dict) -> str:
    """visiontune score: images/s of both engines against the predictor alone."""
    from benchmarks.score_throughput import DEFAULT_COUNT

    rates, rounds = result["images_per_second"], result["rates_by_round"]
    shares = result["of_limit"]
    lines = [
        "## Batch scoring (`visiontune score`)",
        "",
        f"`python -m benchmarks.score_throughput`: {result['images']} JPEGs (640x480) in a "
        "folder scored by the serving benchmark's model (DeiT-tiny size, 224 px, fp32) into "
        f"Parquet, batches of {result['batch_size']}, median of {result['rounds']} round(s) "
        "in rotating order. The limit is the predictor alone on pre-decoded batches in "
        "one process (no reading, decoding or writing), measured before and after each "
        "engine run; each engine's share is of the mean of the two limits around it. The "
        "Ray engine runs on a local Ray "
        f"{result['ray_version']} with {result['ray_cpus']} CPUs, started before the clock "
        f"({result['ray_start_seconds']:.0f} s, not counted; its actors' start and model "
        f"load are). Target: at least {result['target']:.1f} of the limit for both engines.",
        "",
        "| | images/s (median) | of the limit (median of the rounds' shares) | images/s each run |",
        "| --- | ---: | ---: | --- |",
    ]
    for way in ("limit", "local", "ray"):
        share = f"{shares[way]:.3f}" if way in shares else ""
        each = ", ".join(f"{rate:.1f}" for rate in rounds[way])
        lines.append(f"| {way} | {rates[way]:.1f} | {share} | {each} |")
    lines.append("")
    for way, share in shares.items():
        met = "met" if share >= result["target"] else "**missed**"
        lines.append(f"- {way}: {share:.3f} of the limit (target ≥ {result['target']:.1f}, {met})")
    lines.append(
        f"- the limit itself ranged from {min(rounds['limit']):.1f} to "
        f"{max(rounds['limit']):.1f} images/s over the run"
    )
    if result["images"] < DEFAULT_COUNT:
        minutes = DEFAULT_COUNT / rates["limit"] / 60
        lines += [
            "",
            f"This run scored {result['images']} images, not the default {DEFAULT_COUNT:,}: at "
            f"the limit's {rates['limit']:.1f} images/s on this host {DEFAULT_COUNT:,} take "
            f"{minutes:.0f} minutes per variant and round.",
        ]
    if any(share > 1 for share in shares.values()):
        lines += [
            "",
            "A share above 1: the engine ran faster than the predictor alone in one process. "
            "On a busy 2-core host that process's two intra-op threads stall on each other "
            "(see the training benchmark's note), while the local Ray's two single-threaded "
            "actors each decode and classify their own batches.",
        ]
    lines += ["", _machine(result)]
    return "\n".join(lines)


def _live_traffic(result: dict) -> str:
    """Capture and shadow against off, served images/s; memory per extra model."""
    servers, ratios = result["servers"], result["ratios_to_off"]
    levels = [str(c) for c in result["concurrency"]]
    target = result["targets"]["capture_over_off"]
    lines = [
        "## Live traffic: capture, a shadow model, several models",
        "",
        "`python -m benchmarks.live_traffic`: the serving benchmark's model (DeiT-tiny size, "
        "224 px, fp32, one 640x480 JPEG per request) served with capture and shadow off, "
        "with capture on at the default rate (`VISIONTUNE_CAPTURE` a local folder; random "
        "weights put nearly every answer below `VISIONTUNE_LOW_CONFIDENCE`, so the default "
        "low-confidence captures keep about every image, far more than a trained model's "
        f"5%: {result['captured_images']} images written in this run), with another version "
        "as the shadow at the default `VISIONTUNE_SHADOW_RATE` (auto: 0.1 on a CPU) and at "
        f"rate 1. Servers run at once, in rotating order, {result['rounds']} round(s) of "
        f"{result['seconds_per_level']:.0f} s per row; ratios are medians of the rounds' "
        "ratios to `off`.",
        "",
        "| server | "
        + " | ".join(f"images/s (c={c})" for c in levels)
        + " | "
        + " | ".join(f"ratio to off (c={c})" for c in levels)
        + " | failed |",
        "| --- | " + " | ".join("---:" for _ in levels * 2) + " | ---: |",
    ]
    for name, rows in servers.items():
        rates = [f"{rows[c]['images_per_second']:.1f}" for c in levels]
        shares = [f"{ratios[name][c]:.3f}" if name in ratios else "1" for c in levels]
        failed = sum(rows[c]["failures"] for c in levels)
        lines.append(f"| {name} | " + " | ".join(rates + shares) + f" | {failed} |")
    shadow = result["shadow_share_of_throughput"]
    memory = result["memory_mib"]
    lines += [
        "",
        f"Target: capture on at least {target['target']:.2f} of off at every concurrency: "
        f"{target['value']:.3f} ({'met' if target['met'] else 'MISSED'}).",
        "The shadow's share of throughput at the default rate on this CPU: "
        + ", ".join(f"{100 * share:.1f}% at c={c}" for c, share in shadow.items())
        + "; at rate 1 it answers every image: "
        + ", ".join(f"{100 * (1 - ratios['shadow_all'][c]):.1f}% at c={c}" for c in levels)
        + ".",
        "",
        "Memory of a server (its process tree's resident set, one worker) holding 1, 2 and 3 "
        "versions of the model (`VISIONTUNE_MODELS`), each having answered a request: "
        + ", ".join(f"{n} model(s) {mib:.0f} MiB" for n, mib in memory.items())
        + f"; per extra model {result['memory_per_extra_model_mib']:.0f} MiB (its weights, "
        "its warm-up's buffers and its metrics; torch, transformers and BentoML are shared).",
        "",
        _machine(result),
    ]
    return "\n".join(lines)


def _runtimes(result: dict) -> str:
    """The runtime auto picks, served, against the torch-eager service and its own limit."""
    lines = [
        "## Runtimes: ONNX Runtime and OpenVINO behind the service",
        "",
        "`python -m benchmarks.runtimes`: each model's ONNX graphs kept in the store by "
        "`visiontune optimize --int8` (calibrated and checked on the benchmark's 32 JPEGs, "
        "kept as the model's stored images), then served side by side on the same core: "
        "`torch_eager` (`VISIONTUNE_RUNTIME=torch`, `VISIONTUNE_PRECISION=fp32`) and `auto` "
        "(the defaults: the runtime and precision chosen at warm-up). "
        f"Requests: {result['request']} at concurrency {result['concurrency']}, {result['seconds']:.0f} s "
        f"per row, {result['rounds']} rounds in rotating order, medians; the client runs on a "
        "core of its own. The in-process limit is the runtime auto chose, built as the service "
        "builds it, on batches of images decoded on a thread per server core. Start-up: "
        "`bentoml serve` to `/readyz`, against the startup probe's 600 s.",
        "",
        "| model | torch eager images/s | auto: runtime | auto images/s | auto / torch (target) "
        "| forward-pass ceiling | limit images/s (batch) | auto / limit (target) | start-up s "
        "(torch, auto) | optimize s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for model in result["models"]:
        rates, auto = model["images_per_second"], model["auto"]
        limit = {int(k): v for k, v in model["limit"].items()}
        best = max(limit, key=limit.get)
        chosen = (auto["runtime"], auto["precision"])
        ceiling = _forward_ceiling(model)
        verdict = "met" if model["speedup"] >= model["speedup_target"] else "**missed**"
        share = "met" if model["limit_share"] >= model["limit_share_target"] else "**missed**"
        startup = model["startup_seconds"]
        lines.append(
            f"| {model['preset']} | {rates['torch_eager']:.1f} | {chosen[0]} {chosen[1]} | "
            f"{rates['auto']:.1f} | {model['speedup']:.2f}x ({model['speedup_target']}x, "
            f"{verdict}) | {f'{ceiling:.2f}x' if ceiling else ''} | {limit[best]:.1f} ({best}) | "
            f"{model['limit_share']:.2f} ({model['limit_share_target']}, {share}) | "
            f"{startup['torch_eager']:.0f}, {startup['auto']:.0f} | {model['optimize_seconds']:.0f} |"
        )
        candidates = "; ".join(
            f"{r['runtime']} {r['precision']} "
            + (
                f"{min(r['ms_per_image'].values()):.1f} ms"
                if "ms_per_image" in r
                else f"refused ({r['refused'].split(':')[0]})"
                if "refused" in r
                else ""
            )
            for r in auto["runtimes"]
        )
        notes.append(
            f"- {model['preset']}, timed at the auto server's warm-up (ms per image at "
            f"each one's fastest batch size): {candidates}."
        )
    beyond = [
        m["preset"]
        for m in result["models"]
        if (c := _forward_ceiling(m)) is not None and c < m["speedup_target"]
    ]
    no_bf16 = not any(
        r["precision"] == "bfloat16" for m in result["models"] for r in m["auto"]["runtimes"]
    )
    if beyond:
        notes.append(
            f"- Beyond this CPU: for {', '.join(beyond)} even the forward pass alone is not "
            "that much faster than torch's here, so no server on these runtimes reaches the "
            "target on this machine; the ceiling column is the most there is."
        )
    if any(m["limit_share"] > 1 for m in result["models"]):
        notes.append(
            "- A share above 1: the served rate passed the in-process limit measured in the same "
            "rounds, which only happens when the host's other work slows the limit's bursts more "
            "than the servers' longer rows (the load average is below); the share says little in "
            "such a run, the served ratios measured side by side still hold."
        )
    if no_bf16:
        notes.append(
            "- No bf16 candidate: this CPU has neither AVX512-BF16 nor AMX, so OpenVINO (and "
            "torch) compute in fp32 here; on a CPU with them, OpenVINO's bf16 is a candidate "
            "and is served if it agrees with fp32."
        )
    lines += [
        "",
        "Forward-pass ceiling: torch fp32's time per image over the chosen runtime's, as the "
        "auto server timed them at warm-up: the most any server on this runtime could gain "
        "over torch eager once decoding and HTTP, which both servers pay alike, are counted "
        "at zero.",
        "",
        *notes,
        "",
        "ONNX Runtime's CUDA and TensorRT providers: their figures await a machine with a GPU "
        "(`benchmarks/gpu_check.sh` runs them).",
        "",
        f"The servers and the limit run pinned to CPU(s) {result['machine']['server_cpus']} and "
        "size their threads from them; the client runs on CPU(s) "
        f"{result['machine']['client_cpus']}.",
        _machine(result),
    ]
    return "\n".join(lines)


def _forward_ceiling(model: dict) -> float | None:
    """torch fp32's warm-up time per image over the chosen runtime's."""
    auto = model["auto"]
    timed = {
        (r["runtime"], r["precision"]): min(r["ms_per_image"].values())
        for r in auto["runtimes"]
        if "ms_per_image" in r
    }
    chosen = (auto["runtime"], auto["precision"])
    if ("torch", "float32") not in timed or chosen not in timed:
        return None
    return timed[("torch", "float32")] / timed[chosen]


if __name__ == "__main__":
    print(f"wrote {write()}")
