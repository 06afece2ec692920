"""``alertpipe ingestor``: serve POST /v1/events (and, with ``--grpc-port``, gRPC ingest) for one pipeline
until SIGTERM, then drain and flush."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from alertpipe.workers.config.loaders import add_config_argument, parse_config_arg
from alertpipe.workers.errors import ConfigError
from alertpipe.workers.gc_policy import GcPauses, add_gc_argument
from alertpipe.workers.gc_policy import apply as apply_gc_policy
from alertpipe.workers.ingestor.app import Ingestor, IngestorSettings, KeySource
from alertpipe.workers.ingestor.grpc_server import GrpcTls, start_grpc_server
from alertpipe.workers.loops import LOOP_CHOICES, loop_factory
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["add_arguments", "grpc_tls", "run", "serve"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_secrets_argument(parser)
    add_gc_argument(parser)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--grpc-port", type=int, default=None, metavar="PORT",
        help="also serve gRPC ingest (alertpipe.ingest.v1.Ingest) on this port; 0: a free one (default: off)",
    )
    parser.add_argument(
        "--grpc-tls-cert", default=None, metavar="PATH",
        help="PEM certificate chain: the gRPC port serves TLS only (with --grpc-tls-key)",
    )
    parser.add_argument(
        "--grpc-tls-key", default=None, metavar="PATH", help="PEM private key of --grpc-tls-cert"
    )
    parser.add_argument(
        "--api-keys-file", default=None, metavar="PATH",
        help="key list (TENANT:KEY or TENANT/PIPELINE:KEY per line) instead of ingest.apiKeysSecretRef",
    )
    parser.add_argument(
        "--delivery-timeout", type=float, default=15.0, metavar="SECONDS",
        help="how long a request waits for the broker's acknowledgement before 503 (default 15)",
    )
    parser.add_argument(
        "--max-inflight", type=int, default=200_000, metavar="EVENTS",
        help="unacknowledged events before requests get 429 (default 200000)",
    )
    parser.add_argument("--linger-ms", type=int, default=1, help="producer linger.ms (default 1)")
    parser.add_argument(
        "--drain-seconds", type=float, default=0.0, metavar="SECONDS",
        help="on SIGTERM, answer 503 on /readyz this long before closing the listener (default 0;"
        " a few seconds in a cluster so endpoints are updated)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--loop", choices=LOOP_CHOICES, default="asyncio",
        help="event loop: asyncio (default; uvloop measured no gain in bench/ingestor), uvloop, or"
        " auto (uvloop when installed)",
    )


async def serve(ingestor: Ingestor, host: str, port: int, *, drain_seconds: float = 0.0,
                access_log: bool = False, stop: asyncio.Event | None = None,
                grpc_port: int | None = None, grpc_tls: GrpcTls | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT), then drain, finish requests and flush."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        ingestor.app(),
        shutdown_timeout=ingestor.settings.delivery_timeout + 5,
        access_log=logging.getLogger("alertpipe.ingestor.access") if access_log else None,
    )
    await runner.setup()
    grace = ingestor.settings.delivery_timeout + 5
    site = web.TCPSite(runner, host, port, backlog=1024, shutdown_timeout=grace)
    await site.start()
    logger.info("ingestor listening on %s:%d", host, port)
    grpc_server = None
    try:
        if grpc_port is not None:
            grpc_server, _ = await start_grpc_server(ingestor, host, grpc_port, grpc_tls)
        await stop.wait()
    finally:
        logger.info("shutting down: draining for %.1fs, then finishing in-flight requests", drain_seconds)
        ingestor.draining = True
        if drain_seconds > 0:
            await asyncio.sleep(drain_seconds)
        if grpc_server is not None:
            await grpc_server.stop(grace)  # in-flight calls finish; new ones get UNAVAILABLE
        await runner.cleanup()
        logger.info("ingestor stopped")


def grpc_tls(args: argparse.Namespace) -> GrpcTls | None:
    """The gRPC listener's TLS files from the flags (both or neither; only with --grpc-port)."""
    cert, key = args.grpc_tls_cert, args.grpc_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--grpc-tls-cert" if cert is None else "--grpc-tls-key",
                          "TLS needs both --grpc-tls-cert and --grpc-tls-key")  # fmt: skip
    if args.grpc_port is None:
        raise ConfigError("--grpc-port", "--grpc-tls-cert/--grpc-tls-key need --grpc-port")
    tls = GrpcTls(Path(cert), Path(key))
    tls.credentials()  # unreadable or non-PEM files: refused at start, not at the first call
    return tls


def run(args: argparse.Namespace) -> int:
    try:
        source = parse_config_arg(args.config)
        tls = grpc_tls(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    keys = KeySource(path=args.api_keys_file, resolver=SecretResolver(args.secrets_dir))
    settings = IngestorSettings(
        delivery_timeout=args.delivery_timeout, max_inflight=args.max_inflight, linger_ms=args.linger_ms
    )
    ingestor = Ingestor(source, keys, settings)
    GcPauses(ingestor.metrics.registry, "ingestor").install()
    apply_gc_policy(args.gc_young)
    main = serve(ingestor, args.host, args.port, drain_seconds=args.drain_seconds, access_log=args.access_log,
                 grpc_port=args.grpc_port, grpc_tls=tls)
    factory = loop_factory(args.loop, "ingestor")
    if factory is None:
        asyncio.run(main)
    else:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
    return 0
