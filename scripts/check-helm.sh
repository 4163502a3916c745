#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/orderflow: helm lint, helm template with the default values, the
# production values and the production values with a chart-made Secret (ci/secrets-values.yaml), then
#   - every core Kubernetes object against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) of the
#     oldest and newest Kubernetes versions checked,
#   - every KEDA and Prometheus Operator object against its CRD's openAPIV3Schema, taken from the projects'
#     Go modules, with unknown fields refused (check-jsonschema),
#   - the chart's own rules (resources, security context, probes, one scaler per Deployment, secret files
#     mounted where the configuration names them),
#   - when an orderflow binary is at hand (ORDERFLOW_BIN, else target/debug or target/release), that every
#     role's rendered configuration file and environment load, and that each ScaledObject watches the
#     consumer group the role joins.
# Tools are installed on first use under ~/.cache/orderflow (Helm from its Go module, Python venvs from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
KEDA_VERSION=v2.20.2
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# The chart's kubeVersion floor and the newest version kubernetes-validate knows.
KUBERNETES_VERSIONS=(1.29 1.37)

chart=deploy/helm/orderflow
cache="${HOME}/.cache/orderflow"
helm="$cache/helm-${HELM_VERSION}/bin/helm"
kv_venv="$cache/python-kubernetes-validate"
cj_venv="$cache/python-check-jsonschema"

command -v go >/dev/null 2>&1 || { echo "error: go not found: it builds Helm and fetches the CRD schemas" >&2; exit 1; }
if [[ ! -x "$helm" ]]; then
  echo "== installing helm ${HELM_VERSION} (go install)"
  GOBIN="$(dirname "$helm")" go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi
if [[ ! -x "$kv_venv/bin/kubernetes-validate" ]] \
  || [[ "$("$kv_venv/bin/kubernetes-validate" --version 2>/dev/null)" != *"$KUBERNETES_VALIDATE_VERSION"* ]]; then
  echo "== installing kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}"
  rm -rf "$kv_venv"
  python3 -m venv "$kv_venv"
  "$kv_venv/bin/pip" install -q "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
fi
[[ -x "$cj_venv/bin/check-jsonschema" ]] || {
  echo "== installing check-jsonschema ${CHECK_JSONSCHEMA_VERSION}"
  python3 -m venv "$cj_venv" && "$cj_venv/bin/pip" install -q "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}"
}
py="$kv_venv/bin/python"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== CRD schemas (KEDA ${KEDA_VERSION}, prometheus-operator ${PROMETHEUS_OPERATOR_VERSION}, from their Go modules)"
module_dir() {
  local dir
  dir="$(cd "$work" && go mod download -json "$1" | "$py" -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir", "")); sys.exit(1 if d.get("Error") else 0)')" \
    || { echo "error: go mod download $1 failed" >&2; return 1; }
  echo "$dir"
}
keda_dir="$(module_dir "github.com/kedacore/keda/v2@${KEDA_VERSION}")"
po_dir="$(module_dir "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}")"
mkdir -p "$work/schemas"
"$py" - "$work/schemas" \
  "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" \
  "$keda_dir/config/crd/bases/keda.sh_triggerauthentications.yaml" \
  "$po_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" <<'PY'
# Turns each CRD's openAPIV3Schema into a JSON Schema: nullable and int-or-string spelled out, objects with
# declared properties closed to other fields (as the API server's strict field validation does) unless they
# preserve unknown fields, and apiVersion/kind fixed to the CRD's served version.
import json, sys, yaml

def convert(node):
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "description"):
            continue
        out[key] = convert(value) if key not in ("enum", "required", "default", "example") else value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out

target = sys.argv[1]
for path in sys.argv[2:]:
    crd = yaml.safe_load(open(path))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        schema = convert(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["title"] = f"{kind} {group}/{version['name']}"
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"const": f"{group}/{version['name']}"}
        props["kind"] = {"const": kind}
        props["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        name = f"{kind.lower()}-{group}-{version['name']}.json"
        with open(f"{target}/{name}", "w") as f:
            json.dump(schema, f)
        print(f"  {name}")
PY

cases=(default production production-secrets)
values_for() {
  case "$1" in
    default) ;;
    production) echo "-f $chart/values-production.yaml" ;;
    production-secrets) echo "-f $chart/values-production.yaml -f $chart/ci/secrets-values.yaml" ;;
  esac
}
newest="${KUBERNETES_VERSIONS[-1]}"

for case in default production; do
  echo "== helm lint ($case values)"
  # shellcheck disable=SC2046
  "$helm" lint --strict --quiet --kube-version "$newest.0" $(values_for "$case") "$chart"
done

for case in "${cases[@]}"; do
  echo "== helm template ($case values)"
  # shellcheck disable=SC2046
  "$helm" template orderflow "$chart" --namespace orderflow --kube-version "$newest.0" $(values_for "$case") \
    >"$work/$case.yaml"
  echo "  $(grep -c '^kind:' "$work/$case.yaml") objects"
done

echo "== rendered objects: Kubernetes $(IFS=/; echo "${KUBERNETES_VERSIONS[*]}") schemas (strict), CRD schemas, chart rules"
"$py" - "$work" "${KUBERNETES_VERSIONS[*]}" "${cases[@]}" <<'PY'
import os, sys, tomllib, yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

work, versions, cases = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}
SECRET_DIR = "/etc/orderflow/secrets/"
errors = []

def fail(case, obj, message):
    errors.append(f"{case}: {obj['kind']}/{obj['metadata']['name']}: {message}")

def file_settings(table, path=()):
    """(section path, value) of every *_file setting and every secret path in a URL."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from file_settings(value, path + (key,))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from file_settings(item, path + (key,))
        elif isinstance(value, str) and SECRET_DIR in value:
            start = value.index(SECRET_DIR)
            yield path, value[start:].split("&")[0].split("?")[0]

for case in cases:
    objects = [o for o in yaml.safe_load_all(open(f"{work}/{case}.yaml")) if o]
    crd_dir = f"{work}/crd-{case}"
    os.makedirs(crd_dir, exist_ok=True)
    by_kind = {}
    for i, obj in enumerate(objects):
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_KINDS:
            with open(f"{crd_dir}/{i:03d}-{obj['kind']}-{obj['metadata']['name']}.yaml", "w") as f:
                yaml.safe_dump(obj, f)
            by_kind.setdefault(CRD_KINDS[key], []).append(f.name)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(case, obj, f"Kubernetes {version} schema: {path}: {e.message}")
            except SchemaNotFoundError:
                fail(case, obj, f"no Kubernetes {version} schema and no CRD schema for {key[0]} {key[1]}")
    with open(f"{crd_dir}/batches", "w") as f:
        for schema, files in sorted(by_kind.items()):
            f.write(schema + " " + " ".join(files) + "\n")

    # The chart's own rules.
    kinds = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    config = {}
    for cm in kinds.get("ConfigMap", {}).values():
        if "orderflow.toml" in cm.get("data", {}):
            try:
                config[cm["metadata"]["name"]] = tomllib.loads(cm["data"]["orderflow.toml"])
            except tomllib.TOMLDecodeError as e:
                fail(case, cm, f"orderflow.toml is not TOML: {e}")
    secrets = {name: set(s.get("data") or {}) for name, s in kinds.get("Secret", {}).items()}
    scalers = {}
    for hpa in kinds.get("HorizontalPodAutoscaler", {}).values():
        scalers.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(hpa)
    for so in kinds.get("ScaledObject", {}).values():
        scalers.setdefault(so["spec"]["scaleTargetRef"]["name"], []).append(so)
        partitions = next(iter(config.values()), {}).get("kafka", {}).get("partitions")
        if so["spec"].get("maxReplicaCount") != partitions:
            fail(case, so, f"maxReplicaCount {so['spec'].get('maxReplicaCount')} is not kafka.partitions {partitions}")
    pdbs = {p["metadata"]["name"] for p in kinds.get("PodDisruptionBudget", {}).values()}
    services = {s["metadata"]["name"] for s in kinds.get("Service", {}).values()}
    policies = {p["metadata"]["name"] for p in kinds.get("NetworkPolicy", {}).values()}
    for name, obj in {**kinds.get("Deployment", {}), **kinds.get("Job", {})}.items():
        pod = obj["spec"]["template"]["spec"]
        if obj["kind"] == "Deployment":
            n = len(scalers.get(name, []))
            if n > 1:
                fail(case, obj, "targeted by more than one autoscaler")
            if n and "replicas" in obj["spec"]:
                fail(case, obj, "sets replicas although an autoscaler drives it")
            if not n and "replicas" not in obj["spec"]:
                fail(case, obj, "no replicas and no autoscaler")
            for what, names in (("Service", services), ("PodDisruptionBudget", pdbs), ("NetworkPolicy", policies)):
                if name not in names:
                    fail(case, obj, f"no {what}")
        if pod.get("enableServiceLinks") is not False:
            fail(case, obj, "enableServiceLinks must be false (service variables look like ORDERFLOW_ settings)")
        psc = pod.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001
                and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
            fail(case, obj, "pod securityContext: runAsNonRoot, runAsUser 10001, seccomp RuntimeDefault")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        fail(case, obj, f"container {c['name']}: no resources.{kind}.{r}")
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]
                    and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault" and sc.get("runAsNonRoot")):
                fail(case, obj, f"container {c['name']}: securityContext")
            if obj["kind"] == "Deployment":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe not in c:
                        fail(case, obj, f"container {c['name']}: no {probe}")
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    fail(case, obj, f"container {c['name']}: readiness is not /readyz")
                if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                    fail(case, obj, f"container {c['name']}: liveness is not /healthz")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if "/var/lib/orderflow/data" not in mounts or "emptyDir" not in volumes.get(mounts["/var/lib/orderflow/data"], {}):
                fail(case, obj, f"container {c['name']}: data dir is not an emptyDir")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if any("valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in c.get("env", [])):
                fail(case, obj, f"container {c['name']}: a secret in the environment (mount it as a file)")
            cm_name = volumes.get(mounts.get("/etc/orderflow/config"), {}).get("configMap", {}).get("name")
            if cm_name not in config:
                fail(case, obj, f"container {c['name']}: configuration ConfigMap {cm_name} not rendered")
                continue
            # Every secret file the configuration names must be mounted into the pods that read it:
            # the gateway's files into the gateway, the rest into every pod.
            secret_volume = volumes.get(mounts.get(SECRET_DIR.rstrip("/")), {}).get("secret", {})
            mounted = {SECRET_DIR + item["path"] for item in secret_volume.get("items", [])}
            role = c["args"][2] if c["args"][:2] == ["run", "--role"] else None
            needed = {p for section, p in file_settings(config[cm_name]) if section[:1] != ("gateway",) or role == "gateway"}
            needed |= {v for k, v in env.items() if v and v.startswith(SECRET_DIR)}
            for path in sorted(needed - mounted):
                fail(case, obj, f"container {c['name']}: {path} is named by the configuration but not mounted")
            secret_name = secret_volume.get("secretName")
            if secret_name in secrets:
                for item in secret_volume.get("items", []):
                    if item["key"] not in secrets[secret_name]:
                        fail(case, obj, f"mounts key {item['key']} that Secret {secret_name} lacks")
    print(f"  {case}: {len(objects)} objects")

if errors:
    print("\n".join("error: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
PY
for case in "${cases[@]}"; do
  while read -r schema files; do
    # shellcheck disable=SC2086
    "$cj_venv/bin/check-jsonschema" --schemafile "$work/schemas/$schema" $files >/dev/null \
      || { "$cj_venv/bin/check-jsonschema" --schemafile "$work/schemas/$schema" $files || true; echo "error: $case: objects do not match $schema" >&2; exit 1; }
    echo "  $case: $(wc -w <<<"$files") object(s) match $schema"
  done <"$work/crd-$case/batches"
done

bin="${ORDERFLOW_BIN:-}"
if [[ -z "$bin" ]]; then
  for candidate in target/debug/orderflow target/release/orderflow; do
    [[ -x "$candidate" ]] && { bin="$candidate"; break; }
  done
fi
if [[ -z "$bin" ]]; then
  echo "== rendered configuration against the orderflow binary: skipped (no binary; set ORDERFLOW_BIN or build first)"
else
  [[ -x "$bin" ]] || { echo "error: ORDERFLOW_BIN=$bin is not executable" >&2; exit 1; }
  echo "== rendered configuration against $bin (each container's file and environment load; groups match KEDA)"
  "$py" - "$work" "$bin" "${cases[@]}" <<'PY'
import base64, os, re, subprocess, sys, yaml

work, binary, cases = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
errors = []
for case in cases:
    objects = [o for o in yaml.safe_load_all(open(f"{work}/{case}.yaml")) if o]
    kinds = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    scaled = {so["spec"]["scaleTargetRef"]["name"]: t["metadata"]["consumerGroup"]
              for so in kinds.get("ScaledObject", {}).values() for t in so["spec"]["triggers"]}
    for name, obj in {**kinds.get("Deployment", {}), **kinds.get("Job", {})}.items():
        pod = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            root = f"{work}/pods/{case}/{name}/{c['name']}"
            remap = lambda s: s.replace("/etc/orderflow/", f"{root}/etc/orderflow/").replace("/var/lib/orderflow/", f"{root}/var/lib/orderflow/")
            for m in c.get("volumeMounts", []):
                vol = volumes[m["name"]]
                target = remap(m["mountPath"])
                os.makedirs(target, exist_ok=True)
                if "configMap" in vol:
                    cm = kinds["ConfigMap"][vol["configMap"]["name"]]
                    for key, text in cm["data"].items():
                        with open(f"{target}/{key}", "w") as f:
                            f.write(remap(text))
                elif "secret" in vol:
                    secret = kinds.get("Secret", {}).get(vol["secret"]["secretName"], {}).get("data", {})
                    for item in vol["secret"].get("items", []):
                        value = base64.b64decode(secret[item["key"]]) if item["key"] in secret else b"placeholder"
                        with open(f"{target}/{item['path']}", "wb") as f:
                            f.write(value)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": root}
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = remap(str(e["value"]))
                elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                    env[e["name"]] = f"{name}-0"
                else:
                    errors.append(f"{case}: {name}: env {e['name']}: cannot be resolved here")
            role = c["args"][2] if c["args"][:2] == ["run", "--role"] else None
            args = [binary, "topics", "acls"] + (["--role", role] if role else [])
            run = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True)
            if run.returncode != 0:
                errors.append(f"{case}: {name}/{c['name']}: the configuration does not load: {(run.stderr or run.stdout).strip()}")
                continue
            groups = re.findall(r"^\S+\s+READ\s+GROUP\s+\S+\s+(\S+)$", run.stdout, re.M)
            if name in scaled and [scaled[name]] != groups:
                errors.append(f"{case}: {name}: ScaledObject watches {scaled[name]}, the role joins {groups}")
    print(f"  {case}: configuration loads in every container"
          + (f"; {len(scaled)} ScaledObjects watch their role's group" if scaled else ""))
if errors:
    print("\n".join("error: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
PY
fi
echo "helm chart: ok"
