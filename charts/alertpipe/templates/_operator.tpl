{{/*
How the chart runs `alertpipe operator`: its arguments and environment, kept in one place so that
the chart follows the operator's command line (operator/cli.py, `alertpipe operator --help`).
*/}}

{{- define "alertpipe.webhook.certDir" -}}/etc/alertpipe/webhook-tls{{- end -}}

{{- define "alertpipe.peeringName" -}}
{{- default (include "alertpipe.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "alertpipe.operator.args" -}}
{{- /* One token: `alertpipe` takes the first argument not starting with "-" for the subcommand. */ -}}
- --log-level={{ .Values.operator.logLevel }}
- operator
{{- range .Values.operator.watchNamespaces }}
- --namespace
- {{ . }}
{{- end }}
- --health-port
- {{ .Values.operator.healthPort | quote }}
- --metrics-port
- {{ .Values.operator.metricsPort | quote }}
{{- if .Values.webhook.enabled }}
- --webhook-port
- {{ .Values.webhook.port | quote }}
- --webhook-cert
- {{ printf "%s/tls.crt" (include "alertpipe.webhook.certDir" .) }}
- --webhook-key
- {{ printf "%s/tls.key" (include "alertpipe.webhook.certDir" .) }}
{{- end }}
{{- if .Values.peering.enabled }}
- --peering
- {{ include "alertpipe.peeringName" . }}
{{- end }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The worker image the operator puts into the Deployments it creates: the chart's own image. */}}
{{- define "alertpipe.operator.env" -}}
- name: ALERTPIPE_WORKER_IMAGE
  value: {{ include "alertpipe.image" . | quote }}
- name: ALERTPIPE_WORKER_IMAGE_PULL_POLICY
  value: {{ .Values.image.pullPolicy | quote }}
{{- if .Values.peering.enabled }}
# Kopf names each peer by POD_ID: the pod's name reads better than user@host in the peering status.
- name: POD_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end -}}

{{- define "alertpipe.operator.livenessPath" -}}/healthz{{- end -}}
{{- define "alertpipe.operator.readinessPath" -}}/readyz{{- end -}}

{{/* The admission handlers the operator serves, by Kopf handler id (the URL path is /<id>):
operator/handlers.py RULE_WEBHOOK_ID and PIPELINE_WEBHOOK_ID. */}}
{{- define "alertpipe.webhook.handlers" -}}
- id: validate-alertpipeline
  resource: alertpipelines
- id: validate-alertrule
  resource: alertrules
{{- end -}}
