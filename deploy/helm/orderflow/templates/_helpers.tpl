{{/* Names, labels and the configuration file shared by the templates. */}}

{{- define "orderflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; role objects append "-<role>", so it is kept to 50 characters. */}}
{{- define "orderflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orderflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orderflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orderflow.labels" -}}
helm.sh/chart: {{ include "orderflow.chart" . }}
{{ include "orderflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orderflow
{{- end -}}

{{/* Called with (dict "root" $ "role" "payments"). */}}
{{- define "orderflow.roleSelectorLabels" -}}
{{ include "orderflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "orderflow.roleLabels" -}}
{{ include "orderflow.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "orderflow.roleName" -}}
{{- printf "%s-%s" (include "orderflow.fullname" .root) .role -}}
{{- end -}}

{{- define "orderflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orderflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.secretName" -}}
{{- default (include "orderflow.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Roles serving the HTTP API on 8080. */}}
{{- define "orderflow.httpRoles" -}}gateway orders{{- end -}}

{{/* Roles that only consume, and may scale on their group's lag. */}}
{{- define "orderflow.consumerRoles" -}}payments enrichment inventory projector analytics audit{{- end -}}

{{- define "orderflow.allRoles" -}}gateway orders payments enrichment inventory projector analytics audit{{- end -}}

{{/* "true" when KEDA drives the role's replicas. Called with (dict "root" $ "role" "payments"). */}}
{{- define "orderflow.kedaManaged" -}}
{{- $r := index .root.Values.roles .role -}}
{{- $k := default dict $r.keda -}}
{{- if and .root.Values.keda.enabled $r.enabled (has .role (splitList " " (include "orderflow.consumerRoles" .root))) (ne (toString $k.enabled) "false") -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the chart's CPU HorizontalPodAutoscaler drives the role's replicas. */}}
{{- define "orderflow.hpaManaged" -}}
{{- $r := index .root.Values.roles .role -}}
{{- if and $r.enabled $r.autoscaling $r.autoscaling.enabled (not (include "orderflow.kedaManaged" .)) -}}
true
{{- end -}}
{{- end -}}

{{/* The full consumer group id of a role: the topic prefix namespaces groups too. */}}
{{- define "orderflow.consumerGroup" -}}
{{- $r := index .root.Values.roles .role -}}
{{- printf "%s%s" .root.Values.kafka.topicPrefix $r.consumerGroup -}}
{{- end -}}

{{/* Where the Secret's files are mounted. */}}
{{- define "orderflow.secretDir" -}}/etc/orderflow/secrets{{- end -}}
{{- define "orderflow.configFile" -}}/etc/orderflow/config/orderflow.toml{{- end -}}
{{- define "orderflow.dataDir" -}}/var/lib/orderflow/data{{- end -}}

{{/* Secret keys every process reads, one per line. */}}
{{- define "orderflow.commonSecretKeys" -}}
{{- with .Values -}}
{{- if .database.passwordFromSecret }}database-password
{{ end -}}
{{- if .database.caFromSecret }}database-ca.crt
{{ end -}}
{{- if .redis.passwordFromSecret }}redis-password
{{ end -}}
{{- if .redis.caFromSecret }}redis-ca.crt
{{ end -}}
{{- if .kafka.security.passwordFromSecret }}kafka-password
{{ end -}}
{{- if .kafka.security.caFromSecret }}kafka-ca.crt
{{ end -}}
{{- if .kafka.security.clientCertificateFromSecret }}kafka-client.crt
kafka-client.key
{{ end -}}
{{- end -}}
{{- end -}}

{{/* Secret keys only the gateway reads. */}}
{{- define "orderflow.gatewaySecretKeys" -}}
{{- range .Values.gateway.apiKeys }}api-key-{{ .id }}
{{ end -}}
{{- with .Values.gateway.jwt -}}
{{- if .hs256FromSecret }}jwt-hs256-secret
{{ end -}}
{{- if .jwksFromSecret }}jwks.json
{{ end -}}
{{- range .publicKeys }}jwt-key-{{ .kid }}.pem
{{ end -}}
{{- end -}}
{{- end -}}

{{/* Secret keys the hook Jobs read besides the common ones. */}}
{{- define "orderflow.hookSecretKeys" -}}
{{- if .Values.migrate.databaseUrl }}migrate-database-password
{{ end -}}
{{- if and .Values.topics.kafkaUsername .Values.kafka.security.passwordFromSecret }}topics-kafka-password
{{ end -}}
{{- end -}}

{{/* Refuses values that cannot work. */}}
{{- define "orderflow.validate" -}}
{{- $roles := splitList " " (include "orderflow.allRoles" .) -}}
{{- range $name, $_ := .Values.roles -}}
{{- if not (has $name $roles) -}}
{{- fail (printf "roles.%s: unknown role (roles are %s)" $name (join ", " $roles)) -}}
{{- end -}}
{{- end -}}
{{- range $role := $roles -}}
{{- if not (index $.Values.roles $role) -}}
{{- fail (printf "roles.%s is missing" $role) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.database.caFromSecret (not (contains "sslrootcert=" .Values.database.url)) -}}
{{- fail "database.caFromSecret: name the CA in database.url (sslrootcert=/etc/orderflow/secrets/database-ca.crt)" -}}
{{- end -}}
{{- if lt (int .Values.kafka.partitions) 1 -}}
{{- fail "kafka.partitions must be at least 1" -}}
{{- end -}}
{{- range .Values.gateway.apiKeys -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+$" (toString .id)) -}}
{{- fail (printf "gateway.apiKeys: id %q must match [A-Za-z0-9._-]+ (it names a Secret key)" (toString .id)) -}}
{{- end -}}
{{- end -}}
{{- range .Values.gateway.jwt.publicKeys -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+$" (toString .kid)) -}}
{{- fail (printf "gateway.jwt.publicKeys: kid %q must match [A-Za-z0-9._-]+ (it names a Secret key)" (toString .kid)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.roles.gateway.enabled -}}
{{- if not (or .Values.gateway.apiKeys .Values.gateway.jwt.hs256FromSecret .Values.gateway.jwt.jwksFromSecret .Values.gateway.jwt.publicKeys) -}}
{{- fail "the gateway needs credentials: gateway.apiKeys or a gateway.jwt key" -}}
{{- end -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- range $role := splitList " " (include "orderflow.consumerRoles" .) -}}
{{- $r := index $.Values.roles $role -}}
{{- $k := mergeOverwrite (dict "minReplicaCount" $.Values.keda.minReplicaCount) (default dict $r.keda) -}}
{{- if gt (int $k.minReplicaCount) (int $.Values.kafka.partitions) -}}
{{- fail (printf "roles.%s: KEDA minReplicaCount %v exceeds kafka.partitions %v" $role $k.minReplicaCount $.Values.kafka.partitions) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The configuration file as a map. The chart's settings are merged over .Values.config, so values such as
the consumer group names stay what the ScaledObjects watch.
*/}}
{{- define "orderflow.configMap" -}}
{{- $v := .Values -}}
{{- $dir := include "orderflow.secretDir" . -}}
{{- $database := dict "url" $v.database.url "max_connections" (int $v.database.maxConnections) "migrate_on_start" false -}}
{{- if $v.database.passwordFromSecret -}}
{{- $_ := set $database "password_file" (printf "%s/database-password" $dir) -}}
{{- end -}}
{{- $security := dict -}}
{{- with $v.kafka.security -}}
{{- if .protocol }}{{ $_ := set $security "protocol" .protocol }}{{ end -}}
{{- if .saslMechanism }}{{ $_ := set $security "sasl_mechanism" .saslMechanism }}{{ end -}}
{{- if .username }}{{ $_ := set $security "username" .username }}{{ end -}}
{{- if .passwordFromSecret }}{{ $_ := set $security "password_file" (printf "%s/kafka-password" $dir) }}{{ end -}}
{{- if .caFromSecret }}{{ $_ := set $security "ca_file" (printf "%s/kafka-ca.crt" $dir) }}{{ end -}}
{{- if .clientCertificateFromSecret -}}
{{- $_ := set $security "certificate_file" (printf "%s/kafka-client.crt" $dir) -}}
{{- $_ := set $security "key_file" (printf "%s/kafka-client.key" $dir) -}}
{{- end -}}
{{- end -}}
{{- $kafka := dict "bootstrap_servers" $v.kafka.bootstrapServers "topic_prefix" $v.kafka.topicPrefix "partitions" (int $v.kafka.partitions) "replication_factor" (int $v.kafka.replicationFactor) "min_insync_replicas" (int $v.kafka.minInsyncReplicas) "manage_topics" false "security" $security -}}
{{- if not (kindIs "invalid" $v.kafka.retryPartitions) -}}
{{- $_ := set $kafka "retry_partitions" (int $v.kafka.retryPartitions) -}}
{{- end -}}
{{- $cache := dict "redis_url" $v.redis.url "redis_cluster" $v.redis.cluster "key_prefix" $v.redis.keyPrefix -}}
{{- if $v.redis.passwordFromSecret }}{{ $_ := set $cache "redis_password_file" (printf "%s/redis-password" $dir) }}{{ end -}}
{{- if $v.redis.caFromSecret }}{{ $_ := set $cache "redis_ca_file" (printf "%s/redis-ca.crt" $dir) }}{{ end -}}
{{- $upstreams := $v.gateway.upstreams -}}
{{- if not $upstreams -}}
{{- $upstreams = list (printf "http://%s:8080" (include "orderflow.roleName" (dict "root" . "role" "orders"))) -}}
{{- end -}}
{{- $apiKeys := list -}}
{{- range $v.gateway.apiKeys -}}
{{- $key := dict "id" (toString .id) "key_file" (printf "%s/api-key-%s" $dir .id) "scopes" (default list .scopes) -}}
{{- if .customerId }}{{ $_ := set $key "customer_id" (toString .customerId) }}{{ end -}}
{{- if .requestsPerSecond }}{{ $_ := set $key "requests_per_second" (float64 .requestsPerSecond) }}{{ end -}}
{{- if .burst }}{{ $_ := set $key "burst" (int .burst) }}{{ end -}}
{{- $apiKeys = append $apiKeys $key -}}
{{- end -}}
{{- $jwt := dict -}}
{{- with $v.gateway.jwt -}}
{{- if .hs256FromSecret }}{{ $_ := set $jwt "hs256_secret_file" (printf "%s/jwt-hs256-secret" $dir) }}{{ end -}}
{{- if .jwksFromSecret }}{{ $_ := set $jwt "jwks_file" (printf "%s/jwks.json" $dir) }}{{ end -}}
{{- if .issuer }}{{ $_ := set $jwt "issuer" .issuer }}{{ end -}}
{{- if .audience }}{{ $_ := set $jwt "audience" .audience }}{{ end -}}
{{- if .customerClaim }}{{ $_ := set $jwt "customer_claim" .customerClaim }}{{ end -}}
{{- if not (kindIs "invalid" .leewaySecs) }}{{ $_ := set $jwt "leeway_secs" (int .leewaySecs) }}{{ end -}}
{{- $keys := list -}}
{{- range .publicKeys -}}
{{- $keys = append $keys (dict "kid" (toString .kid) "algorithm" .algorithm "public_key_file" (printf "%s/jwt-key-%s.pem" $dir .kid)) -}}
{{- end -}}
{{- if $keys }}{{ $_ := set $jwt "keys" $keys }}{{ end -}}
{{- end -}}
{{- $gateway := dict "upstreams" $upstreams "dev_key" false "api_keys" $apiKeys "jwt" $jwt -}}
{{- $generated := dict
  "data_dir" (include "orderflow.dataDir" .)
  "database" $database
  "kafka" $kafka
  "cache" $cache
  "gateway" $gateway
  "shutdown" (dict "deadline_secs" (int $v.shutdownDeadlineSeconds))
  "orders" (dict "status_group" $v.roles.orders.consumerGroup)
  "payments" (dict "group" $v.roles.payments.consumerGroup)
  "enrichment" (dict "group" $v.roles.enrichment.consumerGroup)
  "inventory" (dict "group" $v.roles.inventory.consumerGroup)
  "projector" (dict "group" $v.roles.projector.consumerGroup)
  "analytics" (dict "group" $v.roles.analytics.consumerGroup)
  "audit" (dict "group" $v.roles.audit.consumerGroup)
-}}
{{- toYaml (mustMergeOverwrite (deepCopy (default dict $v.config)) $generated) -}}
{{- end -}}

{{/* The configuration file as TOML. */}}
{{- define "orderflow.configToml" -}}
# Orderflow settings (TOML). Environment variables ORDERFLOW_<SECTION>__<KEY> override them per role.
{{- include "orderflow.toml.table" (dict "table" (fromYaml (include "orderflow.configMap" .)) "path" "") }}
{{ end -}}

{{/* TOML writer: keys in order, plain values and arrays first, then tables and arrays of tables. */}}
{{- define "orderflow.toml.table" -}}
{{- $t := .table -}}
{{- $path := .path -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := get $t $k -}}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (and (kindIs "slice" $v) (gt (len $v) 0) (kindIs "map" (first $v)))) }}
{{ include "orderflow.toml.key" $k }} = {{ include "orderflow.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := get $t $k -}}
{{- $p := include "orderflow.toml.key" $k -}}
{{- if $path }}{{ $p = printf "%s.%s" $path $p }}{{ end -}}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "orderflow.toml.table" (dict "table" $v "path" $p) -}}
{{- else if and (kindIs "slice" $v) (gt (len $v) 0) (kindIs "map" (first $v)) -}}
{{- range $item := $v }}

[[{{ $p }}]]
{{- include "orderflow.toml.table" (dict "table" $item "path" $p) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ include "orderflow.toml.value" . }}{{- end -}}
{{- end -}}

{{/*
A TOML value. Strings are JSON strings (valid TOML basic strings) without Go's HTML escapes. YAML numbers
arrive as float64: whole ones are written as TOML integers, which the settings also accept for floats.
*/}}
{{- define "orderflow.toml.value" -}}
{{- if kindIs "string" . -}}{{ toJson . | replace "\\u0026" "&" | replace "\\u003c" "<" | replace "\\u003e" ">" }}
{{- else if kindIs "bool" . -}}{{ . }}
{{- else if kindIs "float64" . -}}{{ if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . -}}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "orderflow.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" . -}}{{ fail "inline tables are not written: nest maps as tables" }}
{{- else -}}{{ . }}
{{- end -}}
{{- end -}}

{{/* The secret keys and values of the chart's Secret (base64), as YAML. Called with the root context. */}}
{{- define "orderflow.secretData" -}}
{{- $s := .Values.secrets -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "orderflow.fullname" .)) | default dict -}}
{{- $existingData := $existing.data | default dict -}}
{{- $data := dict -}}
{{- if .Values.database.passwordFromSecret -}}
{{- $_ := set $data "database-password" (required "secrets.databasePassword is required (or set secrets.existingSecret, or database.passwordFromSecret=false)" $s.databasePassword) -}}
{{- end -}}
{{- if .Values.database.caFromSecret -}}
{{- $_ := set $data "database-ca.crt" (required "secrets.databaseCa is required with database.caFromSecret" $s.databaseCa) -}}
{{- end -}}
{{- if .Values.redis.passwordFromSecret -}}
{{- $_ := set $data "redis-password" (required "secrets.redisPassword is required with redis.passwordFromSecret" $s.redisPassword) -}}
{{- end -}}
{{- if .Values.redis.caFromSecret -}}
{{- $_ := set $data "redis-ca.crt" (required "secrets.redisCa is required with redis.caFromSecret" $s.redisCa) -}}
{{- end -}}
{{- if .Values.kafka.security.passwordFromSecret -}}
{{- $_ := set $data "kafka-password" (required "secrets.kafkaPassword is required with kafka.security.passwordFromSecret" $s.kafkaPassword) -}}
{{- end -}}
{{- if .Values.kafka.security.caFromSecret -}}
{{- $_ := set $data "kafka-ca.crt" (required "secrets.kafkaCa is required with kafka.security.caFromSecret" $s.kafkaCa) -}}
{{- end -}}
{{- if .Values.kafka.security.clientCertificateFromSecret -}}
{{- $_ := set $data "kafka-client.crt" (required "secrets.kafkaClientCertificate is required with kafka.security.clientCertificateFromSecret" $s.kafkaClientCertificate) -}}
{{- $_ := set $data "kafka-client.key" (required "secrets.kafkaClientKey is required with kafka.security.clientCertificateFromSecret" $s.kafkaClientKey) -}}
{{- end -}}
{{- range .Values.gateway.apiKeys -}}
{{- $name := printf "api-key-%s" .id -}}
{{- $given := index (default dict $s.apiKeys) (toString .id) -}}
{{- if $given -}}
{{- $_ := set $data $name $given -}}
{{- else if hasKey $existingData $name -}}
{{- $_ := set $data $name (index $existingData $name | b64dec) -}}
{{- else -}}
{{- $_ := set $data $name (randAlphaNum 48) -}}
{{- end -}}
{{- end -}}
{{- if .Values.gateway.jwt.hs256FromSecret -}}
{{- $_ := set $data "jwt-hs256-secret" (required "secrets.jwtHs256Secret is required with gateway.jwt.hs256FromSecret" $s.jwtHs256Secret) -}}
{{- end -}}
{{- if .Values.gateway.jwt.jwksFromSecret -}}
{{- $_ := set $data "jwks.json" (required "secrets.jwks is required with gateway.jwt.jwksFromSecret" $s.jwks) -}}
{{- end -}}
{{- range .Values.gateway.jwt.publicKeys -}}
{{- $pem := index (default dict $s.jwtPublicKeys) (toString .kid) -}}
{{- $_ := set $data (printf "jwt-key-%s.pem" .kid) (required (printf "secrets.jwtPublicKeys.%s is required" .kid) $pem) -}}
{{- end -}}
{{- if .Values.migrate.databaseUrl -}}
{{- $_ := set $data "migrate-database-password" (required "secrets.migrateDatabasePassword is required with migrate.databaseUrl" $s.migrateDatabasePassword) -}}
{{- end -}}
{{- if and .Values.topics.kafkaUsername .Values.kafka.security.passwordFromSecret -}}
{{- $_ := set $data "topics-kafka-password" (required "secrets.topicsKafkaPassword is required with topics.kafkaUsername" $s.topicsKafkaPassword) -}}
{{- end -}}
{{- range $k, $val := $data }}
{{ $k }}: {{ $val | toString | b64enc }}
{{- end -}}
{{- end -}}

{{/* Pod-level settings shared by roles and hook Jobs. Called with (dict "root" $ "r" <role values>). */}}
{{- define "orderflow.podCommon" -}}
{{- $root := .root -}}
{{- $r := .r -}}
serviceAccountName: {{ default (include "orderflow.serviceAccountName" $root) .serviceAccountName }}
automountServiceAccountToken: false
# Service links would put ORDERFLOW_<SERVICE>_PORT variables into the environment, which the settings
# loader reads as unknown ORDERFLOW_ settings and refuses.
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (default $root.Values.priorityClassName $r.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with (default $root.Values.nodeSelector $r.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations $r.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity $r.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment shared by every container. */}}
{{- define "orderflow.commonEnv" -}}
- name: ORDERFLOW_CONFIG
  value: {{ include "orderflow.configFile" . }}
- name: ORDERFLOW_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- with .Values.log.filter }}
- name: ORDERFLOW_LOG
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The Secret volume with the given keys (a newline-separated list). Called with (dict "root" $ "keys" "..."). */}}
{{- define "orderflow.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      {{- range $key := splitList "\n" .keys | compact | uniq }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
{{- end -}}
