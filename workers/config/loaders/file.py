"""The config source of a local run: a JSON file, polled (mtime and size) by a daemon thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pydantic import ValidationError

from alertpipe.workers.config.models import PipelineConfig

__all__ = ["FileConfigSource"]

logger = logging.getLogger(__name__)


class FileConfigSource:
    """Polls a JSON file (``interval`` seconds) and keeps its newest valid revision."""

    def __init__(self, path: str | Path, interval: float = 0.2) -> None:
        self._path = Path(path)
        self._interval = interval
        self._config: PipelineConfig | None = None
        self._stamp: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reload()

    def current(self) -> PipelineConfig | None:
        return self._config

    def reload(self) -> bool:
        """Read the file if it changed; True when a new revision was taken."""
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = PipelineConfig.from_json(self._path.read_bytes())
        except (ValidationError, ValueError) as exc:
            logger.error("config file %s is invalid, keeping the last good revision: %s",
                         self._path, str(exc).splitlines()[0])
            return False
        if not config.revision:
            config = config.with_revision()
        if self._config is not None and config.revision == self._config.revision:
            return False
        self._config = config
        logger.info("config revision %s loaded from %s", config.revision, self._path)
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="config-file", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.reload()
