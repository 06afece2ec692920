"""``alertpipe devstack provision|up|down|status|env|demo``: the local stack from the command line."""

from __future__ import annotations

import argparse
import shlex
import time

from rich.console import Console
from rich.table import Table

from devstack import control
from devstack.cached import COMPONENTS
from devstack.paths import bin_dir
from devstack.processes import StartError
from devstack.provision import ProvisionError, provision
from devstack.stack import StackEnv

__all__ = ["add_arguments", "run"]

STACK_COMPONENTS = ("redis", "kafka", "kube", "postgres")
SECURE_COMPONENTS = ("secure-kafka", "secure-redis")  # opt-in: SASL/SCRAM+TLS Kafka, TLS+ACL Redis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="devstack_command", metavar="ACTION", required=True)
    p = sub.add_parser("provision", help="fetch/build every component into the cache (idempotent)")
    p.add_argument(
        "components", nargs="*", metavar="COMPONENT", help=f"any of {', '.join(COMPONENTS)} (default: all)"
    )
    p = sub.add_parser("up", help="start the stack in the background; print its endpoints")
    p.add_argument(
        "--components",
        default=",".join(STACK_COMPONENTS),
        help="comma-separated subset of redis,kafka,kube,postgres (default: all)",
    )
    p.add_argument(
        "--no-pod-runner", action="store_true", help="do not run devstack-local's pods as local processes"
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="also start Kafka with SASL/SCRAM over TLS and Redis with TLS and an ACL user"
        " (docs/security.md)",
    )
    p.add_argument(
        "--brokers", type=int, default=1, metavar="N",
        help="Kafka brokers (KRaft; N > 1: replication factor min(N, 3), min.insync.replicas RF - 1)",
    )
    sub.add_parser("down", help="stop the background stack")
    sub.add_parser("status", help="check every component of the background stack")
    sub.add_parser("env", help='print shell exports for the running stack: eval "$(alertpipe devstack env)"')
    p = sub.add_parser("demo", help="run a whole pipeline on the stack: apply, POST, page, kill switch")
    p.add_argument("--keep", action="store_true", help="leave the stack running afterwards")


def _endpoints(console: Console, env: dict[str, str]) -> None:
    table = Table(show_header=False, box=None)
    for key, label in (
        ("ALERTPIPE_KAFKA_BOOTSTRAP", "Kafka bootstrap"),
        ("ALERTPIPE_REDIS_URL", "Redis URL"),
        ("ALERTPIPE_POSTGRES_DSN", "PostgreSQL (history)"),
        ("ALERTPIPE_SECURE_KAFKA_BOOTSTRAP", "Kafka SASL_SSL (SCRAM)"),
        ("ALERTPIPE_SECURE_KAFKA_CA", "its CA"),
        ("ALERTPIPE_SECURE_REDIS_URL", "Redis TLS + ACL"),
        ("KUBECONFIG", "kubeconfig"),
        ("ALERTPIPE_HELM", "helm"),
        ("ALERTPIPE_KUBECTL", "kubectl"),
        ("ALERTPIPE_POD_RUNNER_NODE", "local pods on node"),
        ("ALERTPIPE_DEVSTACK_RUN_DIR", "logs"),
    ):
        if key in env:
            table.add_row(label, env[key])
    console.print(table)


def run(args: argparse.Namespace) -> int:
    console = Console()
    err = Console(stderr=True)
    cmd = args.devstack_command
    try:
        if cmd == "provision":
            unknown = set(args.components) - set(COMPONENTS)
            if unknown:
                err.print(
                    f"unknown component(s): {', '.join(sorted(unknown))}; choose from {', '.join(COMPONENTS)}"
                )
                return 2
            t0 = time.monotonic()
            provision(tuple(args.components) or COMPONENTS, console=console)
            console.print(f"provisioned in {time.monotonic() - t0:.1f}s")
            return 0
        if cmd == "up":
            comps = tuple(c for c in args.components.split(",") if c)
            if args.secure:
                comps += tuple(c for c in SECURE_COMPONENTS if c not in comps)
            unknown = set(comps) - set(STACK_COMPONENTS) - set(SECURE_COMPONENTS)
            if unknown:
                err.print(
                    f"unknown component(s): {', '.join(sorted(unknown))};"
                    f" choose from {', '.join(STACK_COMPONENTS)}"
                )
                return 2
            already = bool(control.running_state())
            t0 = time.monotonic()
            with console.status("starting the devstack ..."):
                state = control.up(comps, pod_runner=not args.no_pod_runner, brokers=args.brokers)
            console.print(
                "[bold]devstack already running[/]" if already
                else f"[bold green]devstack up[/] in {time.monotonic() - t0:.1f}s"
            )  # fmt: skip
            _endpoints(console, state.get("env", {}))
            console.print(f"\nreuse it in tests:  export ALERTPIPE_DEVSTACK_ENV={control.env_file()}")
            console.print('shell exports:      eval "$(alertpipe devstack env)"')
            return 0
        if cmd == "down":
            if control.down():
                console.print("devstack stopped")
            else:
                console.print("no devstack running")
            return 0
        if cmd == "env":
            if not control.running_state():
                err.print("no devstack running: start it with `alertpipe devstack up`")
                return 1
            env = StackEnv.load(control.env_file()).values
            for k, v in {**env, "ALERTPIPE_DEVSTACK_ENV": str(control.env_file())}.items():
                print(f"export {k}={shlex.quote(v)}")
            # kubectl and helm of the stack's Kubernetes version come first on PATH
            print(f'export PATH={shlex.quote(str(bin_dir()))}:"$PATH"')
            return 0
        if cmd == "status":
            return _status(console)
        if cmd == "demo":
            from devstack.demo import DEFAULT_STEPS, run_demo
            from devstack.demo_history import history
            from devstack.demo_pipeline import whole_pipeline

            steps = [*DEFAULT_STEPS, ("Pipeline", whole_pipeline), ("History", history)]
            return run_demo(console, steps=steps, keep=args.keep)
    except (StartError, ProvisionError) as e:
        err.print(f"[red]error:[/] {e}")
        return 1
    raise AssertionError(cmd)


def _status(console: Console) -> int:
    state = control.running_state()
    if not state:
        console.print("no devstack running")
        return 1
    if state.get("status") != "ready":
        console.print(f"devstack {state.get('status')} (pid {state.get('pid')})")
        return 1
    env = StackEnv.load(control.env_file())
    table = Table(title=f"devstack (pid {state.get('pid')})")
    table.add_column("component")
    table.add_column("endpoint")
    table.add_column("health")
    bad = 0
    checks = []
    if "ALERTPIPE_KAFKA_BOOTSTRAP" in env.values:
        checks.append(("kafka", env.values["ALERTPIPE_KAFKA_BOOTSTRAP"], env.check_kafka))
    if "ALERTPIPE_REDIS_URL" in env.values:
        checks.append(("redis", env.values["ALERTPIPE_REDIS_URL"], env.check_redis))
    if "ALERTPIPE_POSTGRES_DSN" in env.values:
        checks.append(("postgres", env.values["ALERTPIPE_POSTGRES_DSN"], env.check_postgres))
    if "KUBECONFIG" in env.values:
        from devstack.demo import DemoContext, nodes_ready

        ctx = DemoContext(env=env, console=console)
        checks.append(("kubernetes", env.values["KUBECONFIG"], lambda: nodes_ready(ctx)))
    for name, endpoint, check in checks:
        try:
            check()
            table.add_row(name, endpoint, "[green]healthy[/]")
        except Exception as e:
            bad += 1
            table.add_row(name, endpoint, f"[red]{type(e).__name__}: {e}[/]")
    console.print(table)
    return 1 if bad else 0
