"""The one home of test helpers: servers and ports, images, configs, deploy tools.

Fixtures live in the conftest files of each tier; what they and the tests call
lives here, so no test imports a conftest.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
