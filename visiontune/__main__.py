"""``python -m visiontune``: the same as the ``visiontune`` console script."""

import sys

from visiontune.cli import main

sys.exit(main())
