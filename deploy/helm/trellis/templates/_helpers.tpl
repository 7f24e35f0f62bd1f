{{/* Names, labels and the values every component shares. */}}

{{- define "trellis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trellis.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "store"). */}}
{{- define "trellis.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The Trellis image: the tag defaults to the chart's appVersion and is never `latest`. */}}
{{- define "trellis.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must name a version, not latest" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "trellis.tokenSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-token" (include "trellis.fullname" .)) -}}
{{- end -}}

{{- define "trellis.etcdEndpoint" -}}
{{- if .Values.etcd.enabled -}}
{{- printf "etcd://%s-etcd:2379" (include "trellis.fullname" .) -}}
{{- else -}}
{{- required "etcd.external.endpoint is required when etcd.enabled is false" .Values.etcd.external.endpoint -}}
{{- end -}}
{{- end -}}

{{/* REDIS_URL for the API and the agents, from the chart's Redis, a value or a Secret. */}}
{{- define "trellis.redisEnv" -}}
- name: REDIS_URL
{{- if .Values.redis.enabled }}
  value: {{ printf "redis://%s-redis:6379" (include "trellis.fullname" .) | quote }}
{{- else if .Values.redis.external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.key }}
{{- else }}
  value: {{ required "redis.external.url or redis.external.existingSecret is required when redis.enabled is false" .Values.redis.external.url | quote }}
{{- end }}
{{- end -}}

{{- define "trellis.tokenVolume" -}}
- name: token
  secret:
    secretName: {{ include "trellis.tokenSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.tokenKey }}
        path: token
{{- end -}}

{{- define "trellis.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required when tls.enabled" .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "trellis.secretMounts" -}}
- name: token
  mountPath: /etc/trellis/token
  readOnly: true
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/trellis/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Server TLS flags (store RPC, API): (dict "ctx" $ "clientAuth" bool). */}}
{{- define "trellis.tlsServerArgs" -}}
{{- if .ctx.Values.tls.enabled }}
- --tls-cert=/etc/trellis/tls/tls.crt
- --tls-key=/etc/trellis/tls/tls.key
- --tls-ca=/etc/trellis/tls/ca.crt
{{- if .clientAuth }}
- --tls-client-auth
{{- end }}
{{- end }}
{{- end -}}

{{/* A container's securityContext: non-root, read-only root, no privileges. */}}
{{- define "trellis.containerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup | default .runAsUser }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* resources: requests = limits for memory (a store's pages must not be reclaimed), merged with extra. */}}
{{- define "trellis.resources" -}}
{{- $computed := dict "requests" (dict "cpu" .cpu "memory" (printf "%dMi" (int .memoryMiB))) "limits" (dict "memory" (printf "%dMi" (int .memoryMiB))) -}}
{{- toYaml (mergeOverwrite $computed (deepCopy (.extra | default dict))) -}}
{{- end -}}
