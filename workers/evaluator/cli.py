"""``alertpipe evaluator --config SOURCE``: run the rule evaluator of one pipeline.

Serves Prometheus metrics on ``--metrics-port``; SIGTERM/SIGINT stop it after a final checkpoint.
A config revision that changes Kafka or Redis settings rebuilds the clients in-process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from typing import Any

import redis

from alertpipe.workers.config.loaders.cli import add_config_argument, parse_config_arg
from alertpipe.workers.errors import ConfigError
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.worker import RESTART, Evaluator, EvaluatorOptions
from alertpipe.workers.gc_policy import GcPauses, add_gc_argument
from alertpipe.workers.gc_policy import apply as apply_gc_policy
from alertpipe.workers.health import RedisReadiness, redis_url, start_health_server
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_secrets_argument(parser)
    parser.add_argument("--metrics-port", type=int, default=9102, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--metrics-host", default="0.0.0.0",  # noqa: S104 - scraped from outside the pod
                        help="address /metrics listens on")
    parser.add_argument("--group", default=None,
                        help="consumer group (default alertpipe-TENANT-PIPELINE-evaluator)")
    parser.add_argument("--instance-id", default=os.environ.get("ALERTPIPE_INSTANCE_ID"),
                        help="static consumer-group member id (e.g. the pod name): a restarted process"
                             " gets its partitions back without waiting for the session timeout")
    parser.add_argument("--no-dedup", action="store_true",
                        help="skip the Redis input dedup (only for sources that never replay)")
    parser.add_argument("--batch-size", type=int, default=5000, help="records per consume() call")
    parser.add_argument("--dedup-depth", type=int, default=4,
                        help="consumed batches whose Redis dedup round trip may be in flight at once")
    parser.add_argument("--checkpoint-interval", type=float, default=1.0,
                        help="seconds between checkpoints (flush, snapshot, commit)")
    parser.add_argument("--linger-ms", type=int, default=1,
                        help="producer linger.ms of alerts, late and forwarded records (default 1)")
    parser.add_argument("--wait-config", type=float, default=60.0,
                        help="seconds to wait for the first config revision")
    add_gc_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        source = parse_config_arg(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    source.start()
    deadline = time.monotonic() + args.wait_config
    while source.current() is None:
        if time.monotonic() > deadline:
            logger.error("no valid config from %s after %.0fs", args.config, args.wait_config)
            return 2
        time.sleep(0.2)
    stop = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        logger.info("signal %d: stopping after a final checkpoint", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cfg = source.current()
    assert cfg is not None  # noqa: S101 - loop above
    metrics = EvaluatorMetrics(cfg.tenant)
    secrets = SecretResolver(args.secrets_dir)
    if args.metrics_port:
        # /healthz, /readyz (503 once stopping or while Redis does not answer) and /metrics on one
        # port: the pod's probes use it.
        redis_ready = RedisReadiness(lambda: redis_url(source.current(), secrets))
        redis_ready.export("evaluator", metrics.registry)
        start_health_server(
            args.metrics_port, args.metrics_host, metrics.registry,
            lambda: (False, "stopping") if stop.is_set() else redis_ready(),
        )
    options = EvaluatorOptions(batch_size=args.batch_size, checkpoint_interval=args.checkpoint_interval,
                               group_id=args.group, instance_id=args.instance_id,
                               dedup=not args.no_dedup, dedup_depth=args.dedup_depth,
                               linger_ms=args.linger_ms)
    GcPauses(metrics.registry, "evaluator").install()
    if apply_gc_policy(args.gc_young):
        logger.info("garbage collector: start-up objects frozen, young threshold %d", args.gc_young)
    delay = 1.0
    try:
        while not stop.is_set():
            try:
                result = Evaluator(source, options=options, secrets=secrets, metrics=metrics).run(stop)
            except redis.RedisError as exc:
                # Redis went away (a restore on assignment, a checkpoint): hold, never exit. The next
                # evaluator reads the config again, so a corrected Redis URL is picked up; /readyz
                # says Redis is unreachable meanwhile.
                logger.warning("evaluator: Redis unavailable (%s); starting again in %.0f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            if result != RESTART:
                break
    finally:
        source.stop()
    return 0
