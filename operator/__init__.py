"""alertpipe's control plane (Kopf): CRD models, reconcilers, scaling and canary decisions, admission."""
