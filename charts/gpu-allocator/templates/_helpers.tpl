{{/* The chart's name, truncated to 63 characters (a DNS label). */}}
{{- define "gpu-allocator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name for objects: the release name, with the chart's name unless it holds it. */}}
{{- define "gpu-allocator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gpu-allocator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-allocator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gpu-allocator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gpu-allocator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gpu-allocator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gpu-allocator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gpu-allocator.leaseName" -}}
{{- default (include "gpu-allocator.fullname" .) .Values.lease.name -}}
{{- end -}}

{{- define "gpu-allocator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The arguments every mode shares, after `run --once` or `run --interval N`. */}}
{{- define "gpu-allocator.commonArgs" -}}
- --lease
- {{ printf "%s/%s" .Release.Namespace (include "gpu-allocator.leaseName" .) | quote }}
- --solver
- {{ .Values.solver | quote }}
- --payments
- {{ .Values.payments | quote }}
- --packing
- {{ .Values.packing | quote }}
- --time-limit
- {{ .Values.timeLimit | toString | quote }}
- --threads
- {{ .Values.threads | toString | quote }}
- --scheduler-name
- {{ .Values.schedulerName | quote }}
{{- if .Values.migPlanning.enabled }}
- --mig-planning
- --mig-config-map
- {{ printf "%s/%s" .Values.migPlanning.configMap.namespace .Values.migPlanning.configMap.name | quote }}
- --reconfigure-cost
- {{ .Values.migPlanning.reconfigureCost | toString | quote }}
- --mig-hold
- {{ .Values.migPlanning.holdSeconds | toString | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The pod spec of a round (CronJob) or of the long-running mode (Deployment); .args is the
     list of arguments before the common ones, .ports the container's ports (optional). */}}
{{- define "gpu-allocator.podSpec" -}}
{{- $ := .root -}}
serviceAccountName: {{ include "gpu-allocator.serviceAccountName" $ }}
automountServiceAccountToken: true
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
containers:
  - name: gpu-allocator
    image: {{ include "gpu-allocator.image" $ | quote }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    command: ["gpu-allocator"]
    args:
      {{- range .args }}
      - {{ . | quote }}
      {{- end }}
      {{- include "gpu-allocator.commonArgs" $ | nindent 6 }}
    {{- with .ports }}
    ports:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $.Values.resources | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  - name: tmp
    emptyDir: {}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "gpu-allocator.inventoryName" -}}
{{- printf "%s-inventory" (include "gpu-allocator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpu-allocator.inventoryServiceAccountName" -}}
{{- if .Values.inventory.serviceAccount.create -}}
{{- default (include "gpu-allocator.inventoryName" .) .Values.inventory.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.inventory.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The inventory's pods carry a name of their own, so that the Deployment's selector (name and
     instance) never matches them. */}}
{{- define "gpu-allocator.inventorySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-inventory" (include "gpu-allocator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: inventory
{{- end -}}
