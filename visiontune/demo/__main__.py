"""`python -m visiontune.demo [--digits]`."""

from __future__ import annotations

import argparse
import sys

from visiontune.errors import fail, message_and_code


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
    try:
        return story.main()
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM turned into training's Interrupted
        return fail(*message_and_code(err))


if __name__ == "__main__":
    sys.exit(main())
