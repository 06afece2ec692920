"""alertpipe's native evaluator hot path (see alertpipe.workers.evaluator.native)."""
from alertpipe_evalcore._evalcore import decode_common

__all__ = ["decode_common"]
