"""The demo's main act: a tenant's pipeline end to end, the way a user runs it.

Applies the CRDs, starts the operator, ``kubectl apply``s an AlertPipeline and an AlertRule (the
devstack's kubectl) and shows ``kubectl get ap,ar``, waits for the workers the operator created to
run as local pods, POSTs a device's readings to the ingestor, and shows the webhook being paged once
on firing and once on resolving, with the latency from the POST to the page. Then a kill switch
holds delivery and its removal releases the held alert, once. Everything is cleaned up afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from kubernetes import client
from rich.table import Table

from devstack.demo import DemoContext
from devstack.kube import LOCAL_NODE_LABEL, kube_client
from devstack.kubectl import Kubectl
from devstack.paths import runs_dir
from devstack.pipeline import (
    GROUP,
    VERSION,
    ThreadedReceiver,
    apply_crds,
    condition,
    demo_pipeline,
    demo_rule,
    event,
    http,
    pod_address,
    post_events,
    run_operator,
    wait_for,
)

__all__ = ["whole_pipeline"]

API_KEY = "demo-key-" + uuid.uuid4().hex
SECRET = uuid.uuid4().hex


def _pages(rec: Any) -> list[dict[str, Any]]:
    return [r.json["alert"] | {"_at": r.at} for r in rec.recorder.accepted("/webhook/ops")]


def whole_pipeline(ctx: DemoContext) -> str:
    ns = f"demo-{uuid.uuid4().hex[:6]}"
    api = kube_client(ctx.kubeconfig)
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    receiver = ThreadedReceiver()
    rec = receiver.receiver
    rec.secrets["/webhook/ops"] = SECRET.encode()
    log = runs_dir() / f"{ns}-operator.log"
    say = ctx.console.print
    kubectl = Kubectl(ctx.kubeconfig, ns)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        wait_for(lambda: core.list_namespaced_service_account(ns).items, "default ServiceAccount", 60)
        apply_crds(api)
        with run_operator(ctx.kubeconfig, ns, log):
            say(f"operator running for namespace [bold]{ns}[/] (log: {log})")
            for name, key, value in (
                ("ingest-keys", "keys", f"{ns}:{API_KEY}\n"),
                ("hook", "secret", SECRET),
            ):
                meta = client.V1ObjectMeta(name=name)
                core.create_namespaced_secret(
                    ns, client.V1Secret(metadata=meta, string_data={key: value})
                )
            selector = {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]}
            body = demo_pipeline(
                "demo", ctx.kafka_bootstrap, ctx.redis_url, rec.url("/webhook/ops"), selector
            )
            t_apply = time.monotonic()
            applied = kubectl.apply(body, demo_rule("demo"))
            say("$ kubectl apply -f pipeline.yaml -f rule.yaml  [dim](rule cpu-hot: value > 80)[/]")
            say(applied.rstrip(), markup=False, highlight=False)

            def ready() -> bool:
                c = condition(co, ns, "demo", "Ready")
                return c is not None and c["status"] == "True"

            wait_for(ready, "AlertPipeline Ready=True", 180)
            say("$ kubectl get ap,ar")
            say(kubectl("get", "ap,ar").check().stdout.rstrip(), markup=False, highlight=False)
            ingestor = f"{pod_address(core, ns, 'demo', 'ingestor')}:8080"
            wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor ready", 120)
            t_ready = time.monotonic() - t_apply
            pods = Table(title=f"pipeline demo: Ready {t_ready:.1f}s after apply")
            for col in ("Deployment", "ready", "local address"):
                pods.add_column(col)
            for d in client.AppsV1Api(api).list_namespaced_deployment(ns).items:
                role = (
                    (d.metadata.labels or {}).get("app.kubernetes.io/component", "")
                    if d.metadata
                    else ""
                )
                pods.add_row(
                    d.metadata.name if d.metadata else "?",
                    f"{(d.status.ready_replicas if d.status else 0) or 0}/{d.spec.replicas if d.spec else 0}",
                    pod_address(core, ns, "demo", role),
                )
            ctx.console.print(pods)

            t0 = int(time.time() * 1000)
            post_events(ingestor, API_KEY, [event(ns, "sensor-7", 1, t0, 42.0)])
            sent = time.time()
            post_events(ingestor, API_KEY, [event(ns, "sensor-7", 2, t0 + 6000, 93.5)])
            wait_for(lambda: _pages(rec), "the page for sensor-7", 60, every=0.01)
            fired_ms = (_pages(rec)[0]["_at"] - sent) * 1000
            sent = time.time()
            post_events(ingestor, API_KEY, [event(ns, "sensor-7", 3, t0 + 7000, 37.0)])
            wait_for(lambda: len(_pages(rec)) >= 2, "the resolution for sensor-7", 60, every=0.01)
            resolved_ms = (_pages(rec)[1]["_at"] - sent) * 1000
            table = Table(title="webhook pages (HMAC signature checked by the receiver)")
            for col in ("status", "alert id", "summary", "POST→page ms"):
                table.add_column(col)
            for page, ms in zip(_pages(rec), (fired_ms, resolved_ms), strict=False):
                table.add_row(
                    page["status"], page["id"][:12], page["annotations"].get("summary", ""), f"{ms:.0f}"
                )
            ctx.console.print(table)
            if rec.recorder.duplicates() or not all(r.signature_ok for r in rec.recorder.accepted()):
                raise AssertionError("a page was doubled or badly signed")

            # Kill switch: hold delivery, produce an alert, release it.
            switch = {"spec": {"killSwitches": {"stopDelivery": {"reason": "demo maintenance"}}}}
            co.patch_namespaced_custom_object(GROUP, VERSION, ns, "alertpipelines", "demo", switch)
            cm = wait_for(
                lambda: (
                    (c := core.read_namespaced_config_map("demo-config", ns)).data
                    and "demo maintenance" in c.data["config.json"]
                    and c
                ),
                "the kill switch in the config",
                30,
            )
            revision = json.loads(cm.data["config.json"])["revision"]
            ctx.scratch["pipeline"] = json.loads(cm.data["config.json"])  # for the history step
            deliverer = f"{pod_address(core, ns, 'demo', 'deliverer')}:9102"
            wait_for(
                lambda: (
                    f'revision="{revision}"' in http("GET", f"http://{deliverer}/metrics")[1].decode()
                ),
                "the deliverer on the kill-switch revision",
                30,
            )
            held = [
                event(ns, "sensor-9", 1, t0 + 8000, 99.0),
                event(ns, "sensor-9", 2, t0 + 15000, 99.0),
            ]
            post_events(ingestor, API_KEY, held)
            time.sleep(2.0)  # a demo pause: show that nothing is paged while the switch is on
            during = len(_pages(rec))
            say(f"stopDelivery on: pages so far {during} (sensor-9's alert waits in Kafka)")
            clear = {"spec": {"killSwitches": {"stopDelivery": None}}}
            co.patch_namespaced_custom_object(GROUP, VERSION, ns, "alertpipelines", "demo", clear)
            wait_for(lambda: len(_pages(rec)) > during, "the held alert after the switch", 60)
            dupes = rec.recorder.duplicates()
            say(f"stopDelivery off: sensor-9 paged; {len(_pages(rec))} pages in all, {dupes} duplicates")
        return (
            f"pipeline Ready in {t_ready:.1f}s; paged once on firing ({fired_ms:.0f} ms after the POST) "
            f"and once on resolving ({resolved_ms:.0f} ms); kill switch held and released"
        )
    finally:
        receiver.stop()
        core.delete_namespace(ns)
        api.close()
