"""How a webhook receiver checks X-Alertpipe-Signature (copy into your service).

    signature = "v1=" + hex(HMAC-SHA256(secret, f"{X-Alertpipe-Timestamp}." + raw_body))

Compare in constant time, reject timestamps older than a few minutes (replay protection), and use
the Idempotency-Key header to drop repeats (a retry after a timeout carries the same key).
"""

from __future__ import annotations

import hashlib
import hmac
import time


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, tolerance: float = 300.0) -> bool:
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
