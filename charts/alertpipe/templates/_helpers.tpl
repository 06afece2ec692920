{{/*
Names, labels and the checks that stop impossible values with a message a user can act on.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "alertpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: fullnameOverride, or "<release>-<name>" (just the release
name when it already contains the chart name). */}}
{{- define "alertpipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "alertpipe.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", kept within 63 characters. */}}
{{- define "alertpipe.suffixed" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "alertpipe.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "alertpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pods: stable for the life of the release. */}}
{{- define "alertpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alertpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of every object the chart renders. */}}
{{- define "alertpipe.labels" -}}
{{ include "alertpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alertpipe
helm.sh/chart: {{ include "alertpipe.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "alertpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "alertpipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false (name an existing ServiceAccount)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference, used by the operator and passed on to the workers it creates. */}}
{{- define "alertpipe.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .Values.image.registry) $repo -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "alertpipe.webhook.serviceName" -}}
{{- include "alertpipe.suffixed" (list . "webhook") -}}
{{- end -}}

{{- define "alertpipe.webhook.secretName" -}}
{{- include "alertpipe.suffixed" (list . "webhook-tls") -}}
{{- end -}}

{{/* The DNS names the webhook's serving certificate is valid for. */}}
{{- define "alertpipe.webhook.dnsNames" -}}
{{- $svc := include "alertpipe.webhook.serviceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* Fail early, with what to change, on values that cannot work together. Included by the
Deployment so that every render runs it. */}}
{{- define "alertpipe.validate" -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- if and $pdb.enabled (gt (int .Values.replicaCount) 1) (not (kindIs "invalid" $pdb.minAvailable)) -}}
{{- if and (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below replicaCount (%d), or no node could ever be drained" (int $pdb.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.peering.enabled) (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount %d needs peering.enabled=true: without peering every replica would reconcile at once" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled=true (the ServiceMonitor scrapes the metrics Service)" -}}
{{- end -}}
{{- $op := .Values.operator -}}
{{- if eq (int $op.healthPort) (int $op.metricsPort) -}}
{{- fail (printf "operator.healthPort and operator.metricsPort must differ (both are %d)" (int $op.healthPort)) -}}
{{- end -}}
{{- if and .Values.webhook.enabled (has (int .Values.webhook.port) (list (int $op.healthPort) (int $op.metricsPort))) -}}
{{- fail (printf "webhook.port (%d) must differ from operator.healthPort and operator.metricsPort" (int .Values.webhook.port)) -}}
{{- end -}}
{{- if ne (len (uniq $op.watchNamespaces)) (len $op.watchNamespaces) -}}
{{- fail (printf "operator.watchNamespaces lists a namespace twice: %v" $op.watchNamespaces) -}}
{{- end -}}
{{- with .Values.webhook.certManager.issuerRef -}}
{{- if not .name -}}
{{- fail "webhook.certManager.issuerRef needs a name (or leave issuerRef empty for a chart-made self-signed Issuer)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
