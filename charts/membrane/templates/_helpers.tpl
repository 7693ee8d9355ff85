{{/* Names, labels and the image reference shared by every template of the Membrane chart. */}}

{{- define "membrane.name" -}}membrane{{- end -}}

{{- define "membrane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "membrane.testImage" -}}
{{- printf "%s:%s" .Values.tests.image.repository (default .Chart.AppVersion .Values.tests.image.tag) -}}
{{- end -}}

{{/* Labels on every object; `component` names the part (operator, webhook, agent). */}}
{{- define "membrane.labels" -}}
app.kubernetes.io/name: membrane
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: membrane
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* The selector of a component's pods: stable across upgrades (no version in it). */}}
{{- define "membrane.selector" -}}
app.kubernetes.io/name: membrane
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "membrane.operatorService" -}}membrane-operator{{- end -}}
{{- define "membrane.webhookService" -}}membrane-webhook{{- end -}}
{{- define "membrane.distributionSecret" -}}membrane-distribution-tls{{- end -}}
{{- define "membrane.hubbleSecret" -}}membrane-hubble{{- end -}}
{{- define "membrane.hubbleRelayService" -}}membrane-hubble-relay{{- end -}}
{{- /* The one name every agent's Hubble certificate carries; the relay checks it instead of each node's address. */ -}}
{{- define "membrane.hubbleAgentServerName" -}}hubble-grpc.membrane.io{{- end -}}
{{- define "membrane.webhookSecret" -}}membrane-webhook-tls{{- end -}}
{{- define "membrane.webhookConfigName" -}}membrane-policy-validation{{- end -}}
{{- define "membrane.webhookName" -}}policies.membrane.io{{- end -}}
{{- define "membrane.leaseName" -}}membrane-operator{{- end -}}
{{- /* The audience of the agents' projected ServiceAccount tokens, which the operator's TokenReview requires. */ -}}
{{- define "membrane.agentTokenAudience" -}}membrane-operator{{- end -}}
