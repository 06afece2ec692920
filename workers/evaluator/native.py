"""The evaluator's native hot path, when installed: ``alertpipe_evalcore`` (Rust, PyO3; built from
native/evalcore by ``make bootstrap`` and the Dockerfile's build stage). Without it, or with
``ALERTPIPE_NATIVE=0`` in the environment, ``decode_common`` is None and the evaluator runs its pure
Python path (records.decode_batch_py), which gives the same result: a differential property test
holds them equal (tests/unit/evaluator/test_native_decode.py).

``decode_common(msgs, tenant, ts_limit, key_head, key_scope, loads, slow)`` decodes the records in
the common shape (``orjson.loads`` + ``events.common_shape`` + the dedup key) and hands every other
record to ``slow(msg) -> (item | None, key | None)``; it returns (items, keys, partitions, offsets)
as records.decode_batch builds them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["NATIVE", "decode_common"]

logger = logging.getLogger(__name__)

DecodeCommon = Callable[..., tuple[list[Any], list[bytes], list[int], list[int]]]


def _load() -> DecodeCommon | None:
    if os.environ.get("ALERTPIPE_NATIVE", "1") == "0":
        return None
    try:
        import alertpipe_evalcore
    except ImportError:  # not built here: the pure Python path
        logger.debug("alertpipe_evalcore is not installed: the evaluator decodes in pure Python")
        return None
    fn: DecodeCommon = alertpipe_evalcore.decode_common
    return fn


decode_common = _load()

NATIVE = decode_common is not None  # what the evaluator runs (its startup log says so)
