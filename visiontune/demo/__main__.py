"""`python -m visiontune.demo [--digits]`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visiontune.demo", description=__doc__)
    parser.add_argument(
        "--digits",
        action="store_true",
        help="the digits story (a backbone pretrained here on digits 0-4, fine-tuned on 5-9) "
        "instead of EfficientNet-Lite0 on Fashion-MNIST",
    )
    args = parser.parse_args(argv)
    if args.digits:
        from visiontune.demo import digits as story
    else:
        from visiontune.demo import fashion as story
    return story.main()


if __name__ == "__main__":
    sys.exit(main())
