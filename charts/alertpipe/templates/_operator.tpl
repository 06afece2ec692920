{{/* placeholder */}}
{{- define "alertpipe.operator.args" -}}
- operator
{{- end -}}
{{- define "alertpipe.operator.env" -}}
- name: ALERTPIPE_WORKER_IMAGE
  value: {{ include "alertpipe.image" . | quote }}
{{- end -}}
{{- define "alertpipe.operator.livenessPath" -}}/healthz{{- end -}}
{{- define "alertpipe.operator.readinessPath" -}}/healthz{{- end -}}
{{- define "alertpipe.webhook.certDir" -}}/etc/alertpipe/webhook-tls{{- end -}}
{{- define "alertpipe.webhook.handlers" -}}
- id: validate-alertpipeline
  resource: alertpipelines
- id: validate-alertrule
  resource: alertrules
{{- end -}}
