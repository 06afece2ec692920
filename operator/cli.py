"""``alertpipe operator``: run the Kopf operator (watches, reconciler, admission webhook, probes, metrics)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alertpipe.operator.diffbase import LeanDiffBaseStorage
from alertpipe.operator.flags import WebhookFlags, check_webhook_flags
from alertpipe.operator.handlers import PIPELINE_WEBHOOK_ID, RULE_WEBHOOK_ID, register
from alertpipe.operator.kube import Kube, load_client
from alertpipe.operator.models import ROLES
from alertpipe.operator.ownedwatch import OwnedWatch
from alertpipe.operator.reconciler import OperatorSettings, Reconciler
from alertpipe.operator.scaler import Scaler

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = "ghcr.io/alertpipe/alertpipe:0.1.0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = parser.add_argument_group("scope")
    g.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; glob patterns allowed); default: all namespaces",
    )
    g.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default without --namespace)",
    )
    g.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster)",
    )
    g = parser.add_argument_group("workers")
    g.add_argument(
        "--image",
        default=env("ALERTPIPE_WORKER_IMAGE", DEFAULT_IMAGE),
        help="worker image for every role (env ALERTPIPE_WORKER_IMAGE; default %(default)s)",
    )
    for role in ROLES:
        g.add_argument(
            f"--{role}-image",
            default=env(f"ALERTPIPE_{role.upper()}_IMAGE"),
            help=f"image override for the {role} (env ALERTPIPE_{role.upper()}_IMAGE)",
        )
    g.add_argument(
        "--image-pull-policy",
        choices=("Always", "IfNotPresent", "Never"),
        default=env("ALERTPIPE_WORKER_IMAGE_PULL_POLICY", "IfNotPresent"),
        help="worker imagePullPolicy unless a pipeline sets spec.<role>.imagePullPolicy"
        " (env ALERTPIPE_WORKER_IMAGE_PULL_POLICY; default %(default)s)",
    )
    g.add_argument(
        "--image-pull-secret",
        action="append",
        default=[s for s in env("ALERTPIPE_WORKER_IMAGE_PULL_SECRETS", "").split(",") if s],
        metavar="NAME",
        help="Secret in each pipeline's namespace to pull worker images (repeatable; added to the"
        " pipeline's spec.imagePullSecrets; env ALERTPIPE_WORKER_IMAGE_PULL_SECRETS, comma-separated)",
    )
    g = parser.add_argument_group("endpoints")
    g.add_argument(
        "--bind",
        default=env("ALERTPIPE_OPERATOR_BIND", "0.0.0.0"),  # noqa: S104 - a pod listens on its own IP
        help="address for probes and metrics (env ALERTPIPE_OPERATOR_BIND; default 0.0.0.0)",
    )
    g.add_argument(
        "--health-port", type=int, default=8081, help="/healthz and /readyz (0 disables; default 8081)"
    )
    g.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics (0 disables; default 9090)"
    )
    g = parser.add_argument_group("admission webhook (validates AlertRules and AlertPipelines)")
    g.add_argument(
        "--webhook-port",
        type=int,
        default=0,
        help="HTTPS port of the webhook server (0: no webhook; chart: 9443)",
    )
    g.add_argument(
        "--webhook-addr",
        default="0.0.0.0",  # noqa: S104 - a pod listens on its own IP
        help="address the webhook server listens on",
    )
    g.add_argument("--webhook-host", default=None, help="host name in the webhook URL (managed mode)")
    g.add_argument("--webhook-cert", default=None, help="TLS certificate file (PEM); e.g. from cert-manager")
    g.add_argument("--webhook-key", default=None, help="TLS private key file (PEM)")
    g.add_argument(
        "--webhook-cert-dir",
        default=env("ALERTPIPE_WEBHOOK_CERT_DIR"),
        help=(
            "folder with tls.crt, tls.key (and ca.crt) as a Secret volume mounts them"
            " (sets --webhook-cert, --webhook-key, --webhook-ca; env ALERTPIPE_WEBHOOK_CERT_DIR,"
            " which `alertpipe devstack env` sets)"
        ),
    )
    g.add_argument("--webhook-ca", default=None, help="CA bundle file for caBundle (managed mode)")
    g.add_argument(
        "--webhook-manage",
        default=None,
        metavar="NAME",
        help="let the operator create/patch ValidatingWebhookConfiguration NAME itself (else the chart does)",
    )
    g = parser.add_argument_group("high availability")
    g.add_argument(
        "--peering",
        default=env("ALERTPIPE_PEERING"),
        metavar="NAME",
        help="Kopf peering object name: replicas with the same NAME run one at a time (needs kopf.dev CRDs)",
    )
    g.add_argument(
        "--priority", type=int, default=None, help="peering priority (default: random per process)"
    )
    g.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds a silent peer counts as alive (failover time; default 60)",
    )
    g = parser.add_argument_group("tuning")
    g.add_argument(
        "--rule-debounce", type=float, default=0.2, help="seconds to gather rule edits (default 0.2)"
    )
    g.add_argument(
        "--rule-max-wait",
        type=float,
        default=1.0,
        help="longest a rule change waits for more (default 1.0; bounds edit -> revision latency)",
    )
    g.add_argument("--resync", type=float, default=300.0, help="seconds between full resyncs (default 300)")
    g.add_argument("--concurrency", type=int, default=8, help="reconciles running at once (default 8)")
    g.add_argument(
        "--scale-interval",
        type=float,
        default=10.0,
        help="seconds between lag observations of an autoscaled pipeline (default 10)",
    )
    g.add_argument("--slo-interval", type=float, default=15.0,
                   help="seconds between two SLO measurements of a pipeline with spec.slo (default 15)")
    g = parser.add_argument_group("canary rollouts")
    g.add_argument("--rollout-interval", type=float, default=2.0,
                   help="seconds between two steps of the rollout timer (default 2)")
    g.add_argument("--pod-address-annotation", default=None,
                   help="read a worker pod's address from this annotation instead of status.podIP"
                        " (the devstack's pod runner writes devstack.alertpipe.io/address)")


async def _serve(rec: Reconciler, bind: str, health_port: int, metrics_port: int) -> list[web.AppRunner]:
    started = asyncio.get_running_loop().time()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        # Ready once the watches have listed everything (or a few seconds passed with nothing to list).
        ok = rec.queue.ready.is_set() or asyncio.get_running_loop().time() - started > 5
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "listing\n")

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    runners = []
    for port, routes in (
        (health_port, [web.get("/healthz", healthz), web.get("/readyz", readyz)]),
        (metrics_port, [web.get("/metrics", metrics_view)]),
    ):
        if not port:
            continue
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, bind, port).start()
        runners.append(runner)
    return runners


def build(args: argparse.Namespace) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings, Reconciler]:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    role_images: dict[str, str] = {
        r: getattr(args, f"{r}_image") for r in ROLES if getattr(args, f"{r}_image")
    }
    rec = Reconciler(
        Kube(load_client(args.kubeconfig)),
        OperatorSettings(
            image=args.image,
            role_images=role_images,
            image_pull_policy=args.image_pull_policy,
            image_pull_secrets=tuple(dict.fromkeys(args.image_pull_secret)),
            rule_debounce=args.rule_debounce,
            rule_max_wait=args.rule_max_wait,
            resync=args.resync,
            concurrency=args.concurrency,
            scale_interval=args.scale_interval,
            slo_interval=args.slo_interval,
            pod_address_annotation=args.pod_address_annotation,
        ),
    )
    registry = kopf.OperatorRegistry()
    register(registry, rec, webhooks=bool(args.webhook_port), scaler=Scaler(rec),
             rollout_interval=args.rollout_interval)
    tasks: list[asyncio.Task[None]] = []
    runners: list[web.AppRunner] = []
    watches: list[OwnedWatch] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # The same credentials as the reconciler's client (kubeconfig flag or in-cluster).
        cfg = rec.kube.api.configuration
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
        scheme, _sep, token = str(auth).partition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            default_namespace=None,
        )

    @kopf.on.startup(registry=registry)
    async def start(**_: Any) -> None:
        await rec.kube.warm()
        clusterwide = bool(args.all_namespaces or not args.namespace)
        owned = OwnedWatch(
            rec.kube.api, [] if clusterwide else args.namespace, rec.owned_seen, asyncio.get_running_loop()
        )
        owned.start()
        watches.append(owned)
        tasks.append(asyncio.create_task(rec.queue.run(), name="reconcile-queue"))
        tasks.append(asyncio.create_task(rec.resync_loop(), name="resync"))
        runners.extend(await _serve(rec, args.bind, args.health_port, args.metrics_port))

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        for w in watches:
            w.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rec.queue.stop()
        await rec.rollouts.scraper.close()
        for r in runners:
            await r.cleanup()

    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # the reconciler posts its own, decision-level Events
    settings.persistence.finalizer = "alertpipe.io/topics"
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(["AlertPipeline"])
    settings.watching.server_timeout = 300
    # Kopf waits this long for more events of an object before handling them; our handlers only
    # feed the store and the work queue (which debounces itself), so a short window is latency won.
    settings.batching.batch_window = 0.01
    settings.networking.request_timeout = 60
    settings.peering.lifetime = args.peering_lifetime
    if args.webhook_cert_dir:
        args.webhook_cert = args.webhook_cert or os.path.join(args.webhook_cert_dir, "tls.crt")
        args.webhook_key = args.webhook_key or os.path.join(args.webhook_cert_dir, "tls.key")
        ca = os.path.join(args.webhook_cert_dir, "ca.crt")
        args.webhook_ca = args.webhook_ca or (ca if os.path.exists(ca) else None)
    if args.webhook_port:
        settings.admission.server = kopf.WebhookServer(
            addr=args.webhook_addr,
            port=args.webhook_port,
            host=args.webhook_host,
            certfile=args.webhook_cert,
            pkeyfile=args.webhook_key,
            cafile=args.webhook_ca,
        )
        if args.webhook_manage:
            settings.admission.managed = args.webhook_manage
    return registry, settings, rec


def flag_errors(args: argparse.Namespace) -> list[str]:
    """What is wrong with the flags, one line each; checked before anything starts."""
    errors = check_webhook_flags(
        WebhookFlags(
            port=args.webhook_port,
            cert=args.webhook_cert,
            key=args.webhook_key,
            cert_dir=args.webhook_cert_dir,
            ca=args.webhook_ca,
            manage=args.webhook_manage,
        ),
        (RULE_WEBHOOK_ID, PIPELINE_WEBHOOK_ID),
    )
    for flag in ("health_port", "metrics_port"):
        value = getattr(args, flag)
        if not 0 <= value <= 65535:
            errors.append(f"--{flag.replace('_', '-')} {value}: a port is 0..65535 (0 turns it off)")
    if args.kubeconfig and not any(os.path.isfile(p) for p in args.kubeconfig.split(os.pathsep)):
        errors.append(f"--kubeconfig {args.kubeconfig}: no such file (or unset KUBECONFIG to run in-cluster)")
    return errors


def run(args: argparse.Namespace) -> int:
    errors = flag_errors(args)
    if errors:
        for e in errors:
            print(f"alertpipe operator: {e}", file=sys.stderr)
        return 2
    registry, settings, _ = build(args)
    peering = args.peering
    clusterwide = bool(args.all_namespaces or not args.namespace)
    kopf.run(
        registry=registry,
        settings=settings,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else args.namespace,
        standalone=not peering,
        peering_name=peering,
        priority=args.priority if args.priority is not None else random.randint(1, 1_000_000),  # noqa: S311
    )
    return 0
