"""Property: a key lets its holder post to a pipeline only when a line of the list grants exactly that
tenant (and pipeline); a platform team's shared key list never lets tenant A write tenant B."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.ingestor.keys import AuthResult, KeyRing

pytestmark = pytest.mark.unit

TENANTS = ["acme", "globex", "acme-2", "ac"]
PIPELINES = ["p1", "p2"]
KEYS = [f"key-{i}-0123456789abcdef" for i in range(4)]
lines = st.tuples(st.sampled_from(TENANTS), st.sampled_from([None, *PIPELINES]), st.sampled_from(KEYS))


@settings(max_examples=300, deadline=None)
@given(granted=st.lists(lines, max_size=8), key=st.sampled_from(KEYS), tenant=st.sampled_from(TENANTS),
       pipeline=st.sampled_from(PIPELINES))
def test_a_key_opens_only_the_pipelines_its_lines_name(
    granted: list[tuple[str, str | None, str]], key: str, tenant: str, pipeline: str
) -> None:
    text = "\n".join(f"{t}/{p}:{k}" if p else f"{t}:{k}" for t, p, k in granted)
    got = KeyRing.from_text(text).authenticate(f"Bearer {key}", tenant, pipeline)
    mine = [(t, p) for t, p, k in granted if k == key]
    if any(t == tenant and p in (None, pipeline) for t, p in mine):
        assert got is AuthResult.OK
    elif mine:
        assert got is AuthResult.FORBIDDEN  # a known key of another tenant or pipeline: 403
    else:
        assert got is AuthResult.UNKNOWN
