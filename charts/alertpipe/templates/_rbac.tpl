{{/*
The operator's permissions, least privilege: what each rule is for is said next to it.
"alertpipe.rbac.namespacedRules" applies in every watched namespace (through a ClusterRole when all
namespaces are watched, through a Role in each listed namespace otherwise); "alertpipe.rbac.clusterRules"
are the read-only cluster-scoped bits Kopf needs in either mode.
*/}}

{{- define "alertpipe.rbac.namespacedRules" -}}
# The resources it reconciles (Kopf patches its progress annotations and finalizers on them).
- apiGroups: ["alertpipe.io"]
  resources: ["alertpipelines", "alertrules"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["alertpipe.io"]
  resources: ["alertpipelines/status", "alertrules/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["alertpipe.io"]
  resources: ["alertpipelines/finalizers"]
  verbs: ["update"]
# What a pipeline owns: its config ConfigMap, worker Deployments, the ingestor Service, and the
# workers' ServiceAccount + Role + RoleBinding (that Role grants read on one ConfigMap, which the
# operator holds itself, so no escalate or bind verbs are needed).
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Canary rollouts: the analysis scrapes the evaluator pods' metrics port, found by listing pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- if .Values.rbac.readSecrets }}
# The Kafka credentials an AlertPipeline references (spec.kafka.credentialsSecretRef), to create its
# topics: get by name only (workers get Secrets as volumes, not through the API).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.keda }}
# Pipelines that scale with KEDA (spec.<role>.autoscaling.engine: keda): the operator writes a
# ScaledObject (and a TriggerAuthentication for Kafka credentials) instead of setting replicas.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects", "triggerauthentications"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}
# Kubernetes Events for every decision (topic created, rule rejected, kill switch on/off).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.peering.enabled .Values.operator.watchNamespaces }}
# Kopf peering in each watched namespace: which replica is active.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}

{{- define "alertpipe.rbac.clusterRules" -}}
# Kopf follows CRDs and namespaces appearing and going (read-only).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- if and .Values.peering.enabled (not .Values.operator.watchNamespaces) }}
# Kopf peering, cluster-wide: which replica is active.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}
