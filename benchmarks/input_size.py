"""Input size: EfficientNet-Lite0's training and inference speed by input size, side by side.

Why small images train at a few times their size, not the backbone's own
(``training.model.input_size_for``): a convolutional backbone takes any input size, and
its cost grows with the pixels, so Fashion-MNIST's 28 px photos upscaled to
EfficientNet's own 224 px cost many times what 96 px costs while adding no information.
Measured here: full fine-tuning steps (forward, backward, AdamW; batch 32, random pixels) and inference forward passes
(batch 32) of the ImageNet backbone with a 10-class head at each size, the sizes
alternating round by round; figures are medians over rounds, and each size's speed
relative to 224 px. The accuracy at the chosen 96 px (and at 64 px) is the transfer
section's.
"""

from __future__ import annotations

import time

from benchmarks.common import median, parser, rotations, set_threads, write_result

SIZES = [32, 64, 96, 128, 224]
BATCH = 32


def images_per_second(model, optimizer, size: int, steps: int, train: bool) -> float:
    import torch

    pixels = torch.randn(BATCH, 3, size, size)
    labels = torch.randint(0, 10, (BATCH,))
    model.train(train)
    with torch.set_grad_enabled(train):
        for step in range(steps + 1):
            if step == 1:  # the first step warms up
                started = time.perf_counter()
            logits = model(pixel_values=pixels).logits
            if train:
                torch.nn.functional.cross_entropy(logits, labels).backward()
                optimizer.step()
                optimizer.zero_grad()
    return BATCH * steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = args.parse_args(argv)
    set_threads(args)
    started = time.perf_counter()
    import torch

    from training.model import create_model

    model, _ = create_model("efficientnet-lite0", [str(i) for i in range(10)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sizes = [32, 64] if args.quick else SIZES
    rounds, steps = (1, 2) if args.quick else (args.rounds, 4)
    rates = {mode: {size: [] for size in sizes} for mode in ("train", "inference")}
    for order in rotations(sizes, rounds):
        for size in order:
            for mode in rates:
                rate = images_per_second(model, optimizer, size, steps, mode == "train")
                rates[mode][size].append(rate)
                print(f"  {size:3d} px {mode:9s} {rate:7.1f} images/s", flush=True)
    table = {
        mode: {str(size): median(values) for size, values in by_size.items()}
        for mode, by_size in rates.items()
    }
    base = str(sizes[-1])
    speedup = {
        mode: {size: rate / by_size[base] for size, rate in by_size.items()}
        for mode, by_size in table.items()
    }
    write_result(
        "input_size",
        {"batch_size": BATCH, "images_per_second": table, "speed_vs_largest": speedup},
        args,
        started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
