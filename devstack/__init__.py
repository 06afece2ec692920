"""devstack: provisions and runs real Kafka, Redis, etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok and helm on loopback, for tests, the demo and benchmarks. Not shipped in the wheel."""
