{{/* The release's base name: the release name if it contains the chart's name. */}}
{{- define "nexus.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nexus.labels" -}}
app.kubernetes.io/name: nexus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nexus.secretName" -}}
{{- default (printf "%s-secrets" (include "nexus.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "nexus.seeds" -}}
{{- printf "%s-gossip.%s.svc.%s" (include "nexus.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{- define "nexus.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
