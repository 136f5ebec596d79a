{{/* Names, labels and image references shared by every template of the tritonops chart. */}}

{{- define "tritonops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tritonops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tritonops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels Helm adds to every object it owns (also to the CRD, next to the CRD's own labels). */}}
{{- define "tritonops.crdLabels" -}}
helm.sh/chart: {{ include "tritonops.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tritonops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tritonops.labels" -}}
{{ include "tritonops.selectorLabels" . }}
helm.sh/chart: {{ include "tritonops.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonops
{{- end }}

{{- define "tritonops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tritonops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, repository@digest or repository:tag@digest; without a digest the tag defaults to appVersion. Call with (list repo tag digest ctx). */}}
{{- define "tritonops.imageRef" -}}
{{- $repo := index . 0 }}{{- $tag := index . 1 }}{{- $digest := index . 2 }}{{- $ctx := index . 3 }}
{{- if $digest }}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $digest) }}{{ fail (printf "image digest %q must be sha256:<64 hex digits>" $digest) }}{{ end }}
{{- if $tag }}{{ printf "%s:%s@%s" $repo $tag $digest }}{{ else }}{{ printf "%s@%s" $repo $digest }}{{ end }}
{{- else }}
{{- printf "%s:%s" $repo (default $ctx.Chart.AppVersion $tag) }}
{{- end }}
{{- end }}

{{- define "tritonops.image" -}}
{{- include "tritonops.imageRef" (list .Values.image.repository .Values.image.tag .Values.image.digest .) }}
{{- end }}

{{- define "tritonops.runtimeImage" -}}
{{- include "tritonops.imageRef" (list .Values.runtimeImage.repository .Values.runtimeImage.tag .Values.runtimeImage.digest .) }}
{{- end }}

{{/* The namespaces the operator serves (JSON list); empty when clusterWide. */}}
{{- define "tritonops.watchNamespaces" -}}
{{- if .Values.clusterWide }}
{{- list | toJson }}
{{- else }}
{{- default (list .Release.Namespace) .Values.watchNamespaces | uniq | toJson }}
{{- end }}
{{- end }}


{{/* Where the Prometheus bearer token and CA bundle Secrets are mounted (one file each: token, ca.crt). */}}
{{- define "tritonops.prometheusTokenDir" -}}
/var/run/secrets/tritonops/prometheus-token
{{- end }}

{{- define "tritonops.prometheusCADir" -}}
/var/run/secrets/tritonops/prometheus-ca
{{- end }}

{{/* Fails on analysis.prometheus settings that would be ignored: credentials or TLS options without a URL. */}}
{{- define "tritonops.checkAnalysis" -}}
{{- $p := .Values.analysis.prometheus }}
{{- if not $p.url }}
{{- if or $p.bearerTokenSecret.name $p.caSecret.name $p.insecureSkipVerify }}
{{- fail "analysis.prometheus.bearerTokenSecret, caSecret and insecureSkipVerify need analysis.prometheus.url" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The DNS egress rule of both NetworkPolicies: port 53 (UDP and TCP) to networkPolicy.dnsTo ([]: anywhere). */}}
{{- define "tritonops.dnsEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
