{{/* Full name of the release's resources. */}}
{{- define "epair.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "epair.agentName" -}}
{{- printf "%s-agent" (include "epair.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "epair.serviceAccountName" -}}
{{- default (include "epair.agentName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "epair.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "epair.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* The generated RBAC (charts/epair/files/rbac/role.yaml, from the
     +kubebuilder:rbac markers of internal/controller): the rules of the
     document of the given kind. */}}
{{- define "epair.generatedRules" -}}
{{- $kind := .kind -}}
{{- range $doc := regexSplit "(?m)^---$" (.ctx.Files.Get "files/rbac/role.yaml") -1 -}}
{{- $r := fromYaml $doc -}}
{{- if and $r (eq (get $r "kind") $kind) -}}
{{- toYaml (get $r "rules") -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The conflist the agent installs once ready. */}}
{{- define "epair.conflist" -}}
{{- $epair := dict "type" "epair-cni" "agentSocket" .Values.agent.socket "switch" .Values.defaultSwitch.name -}}
{{- if .Values.cni.mtu -}}{{- $_ := set $epair "mtu" .Values.cni.mtu -}}{{- end -}}
{{- if .Values.cni.logFile -}}{{- $_ := set $epair "logFile" .Values.cni.logFile -}}{{- end -}}
{{- $plugins := prepend .Values.cni.chainedPlugins $epair -}}
{{- dict "cniVersion" .Values.cni.cniVersion "name" .Values.cni.networkName "plugins" $plugins | toPrettyJson -}}
{{- end -}}
