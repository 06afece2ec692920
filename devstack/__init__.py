"""devstack: provisions and runs real Kafka, Redis, etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok and helm on loopback, for tests, the demo and benchmarks. Not shipped in the wheel.

Modules: ``provision`` (the cache), ``processes`` (child processes, no orphans), ``kafka``, ``redis``,
``kube`` (control plane + kwok nodes), ``stack`` (components started lazily in one run directory;
``StackEnv`` for a running one), ``podrunner`` (pods of ``devstack-local`` as local processes),
``supervisor``/``control`` (the background stack of ``alertpipe devstack up``), ``cli``, ``demo``,
``pytest_plugin`` (the fixtures). Start with docs/devstack.md.
"""
