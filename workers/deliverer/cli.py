"""``alertpipe deliverer``: run the deliverer for one pipeline until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from prometheus_client import REGISTRY

from alertpipe.workers.config import SecretKeyRef
from alertpipe.workers.config.loaders import add_config_argument, parse_config_arg
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer
from alertpipe.workers.errors import AlertpipeError, DeliveryError
from alertpipe.workers.gc_policy import GcPauses, add_gc_argument
from alertpipe.workers.gc_policy import apply as apply_gc_policy
from alertpipe.workers.health import RedisReadiness, redis_url, start_health_server
from alertpipe.workers.loops import LOOP_CHOICES, loop_factory
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_secrets_argument(parser)
    add_gc_argument(parser, default=20_000)
    parser.add_argument("--metrics-port", type=int, default=9102, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address /metrics listens on")  # noqa: S104
    parser.add_argument(
        "--group", default=None, help="consumer group (default alertpipe.<tenant>.<pipeline>.deliverer)"
    )
    parser.add_argument(
        "--instance-id",
        default=os.environ.get("ALERTPIPE_INSTANCE_ID") or None,
        help="static consumer-group membership id, e.g. the pod name (env ALERTPIPE_INSTANCE_ID):"
        " a restarted worker takes its partitions back at once instead of after session.timeout.ms",
    )
    parser.add_argument(
        "--claim-ttl",
        type=float,
        default=5.0,
        help="seconds a delivery claim (a lease, extended while its send waits) lives after its worker"
        " stops extending it, before another worker may send it again",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=20_000,
        help="alerts read and not yet terminal before consuming pauses",
    )
    parser.add_argument(
        "--breaker-threshold", type=int, default=5, help="consecutive failures that open a circuit"
    )
    parser.add_argument(
        "--breaker-cooldown", type=float, default=5.0, help="seconds before a half-open probe"
    )
    parser.add_argument(
        "--http-client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="client for plain-http webhooks: lean (keep-alive HTTP/1.1, half the CPU) or aiohttp;"
        " https, Slack and PagerDuty always use aiohttp",
    )
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="asyncio",
        help="event loop: asyncio (default), uvloop (needs the package), auto (uvloop when installed)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        source = parse_config_arg(args.config)
    except AlertpipeError as exc:
        logger.error("%s", exc)
        return 2
    resolver = SecretResolver(args.secrets_dir)
    settings = DelivererSettings(
        group_id=args.group,
        instance_id=args.instance_id,
        claim_ttl=args.claim_ttl,
        max_inflight=args.max_inflight,
        breaker_threshold=args.breaker_threshold,
        breaker_cooldown=args.breaker_cooldown,
        http_client=args.http_client,
    )

    def secret(ref: SecretKeyRef) -> str:
        return resolver.resolve(ref).get_secret_value()

    sources = [source]  # a new one for each new Deliverer (a stopped source does not start again)
    readiness = RedisReadiness(lambda: redis_url(sources[-1].current(), resolver))  # no config: not ready

    if args.metrics_port:  # /healthz, /readyz and /metrics on one port: the pod's probes use it
        readiness.export("deliverer")
        start_health_server(args.metrics_port, args.metrics_host, ready=readiness)
    # Thousands of short-lived tasks per second: move what was imported out of the collector's way
    # and collect the young generation less often (measured: ~10% less CPU per webhook).
    GcPauses(REGISTRY, "deliverer").install()
    apply_gc_policy(args.gc_young, middle=50, old=100)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while True:
            try:
                await Deliverer(sources[-1], secret, settings).run(stop)
                return
            except DeliveryError as exc:  # its Kafka consumer failed for good: a new deliverer
                if not exc.retryable or stop.is_set():
                    raise
                logger.error("%s; starting a new deliverer (offsets and claims carry over)", exc)
                await asyncio.sleep(1.0)
                sources.append(parse_config_arg(args.config))

    factory = loop_factory(args.loop, "deliverer")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except AlertpipeError as exc:
        logger.error("%s", exc)
        return 1
    return 0
