"""Test-wide settings.

PYTHONSAFEPATH: subprocesses started by tests (``python -m alertpipe ...``) from this checkout would
otherwise import the folder operator/ as the stdlib module ``operator``.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTHONSAFEPATH", "1")

import pytest  # noqa: E402 - after the environment is set for the subprocesses

# The README's test command (`make test`, `.ci/run`) selects exactly these: a test without one of
# them would be collected and never run by CI.
RUN_BY_THE_TEST_COMMAND = ("unit", "integration", "e2e", "chaos")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects them out of sight
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [i.nodeid for i in items if not any(i.get_closest_marker(m) for m in RUN_BY_THE_TEST_COMMAND)]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) carry none of the markers {', '.join(RUN_BY_THE_TEST_COMMAND)}"
            f" that the test command selects, e.g. {unmarked[0]}"
        )
