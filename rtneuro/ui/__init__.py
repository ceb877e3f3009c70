"""The browser pages: the operator dashboard and the participant display (no processing; docs/ui.md).

The files in ``static/`` are served by the control server
(:mod:`rtneuro.control.ui_routes`); ``static/vendor/`` holds the JavaScript
library they use, taken once from the npm registry, with its license and
version (``static/vendor/VERSIONS.json``).
"""

from pathlib import Path

__all__ = ["STATIC"]

#: The pages and their assets.
STATIC = Path(__file__).resolve().parent / "static"
