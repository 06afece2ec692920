"""Test-wide settings.

PYTHONSAFEPATH: subprocesses started by tests (``python -m alertpipe ...``) from this checkout would
otherwise import the folder operator/ as the stdlib module ``operator``.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTHONSAFEPATH", "1")
