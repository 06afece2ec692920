"""Which namespaces the owned-object watches cover (pure part of alertpipe.operator.ownedwatch)."""

from __future__ import annotations

import pytest

from alertpipe.operator.ownedwatch import scopes

pytestmark = pytest.mark.unit


def test_plain_names_are_watched_one_by_one_and_globs_cluster_wide() -> None:
    assert scopes([]) == ([None], [])  # every namespace: one watch per kind
    assert scopes(["a", "b", "a"]) == (["a", "b"], [])
    # a glob cannot be listed: watch everything, keep what matches (negations only narrow Kopf's)
    assert scopes(["team-*", "ops", "!team-x"]) == ([None], ["team-*", "ops"])
