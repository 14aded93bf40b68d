#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian 12 machine as root:
#   install everything, start a local registry, build the demo images from busybox-static,
#   start the all-in-one cluster (`shoal up --detach`: SQLite, controllers, a local agent),
#   apply manifests/demo.yaml, roll web out to v2 by digest with live progress, show a
#   health-check-driven restart, and leave the cluster running. Idempotent.
# Environment: SHOAL_DATA (default /var/lib/shoal), SHOAL_REGISTRY_PORT (default 5000),
#   SHOAL_API_PORT (default 6443), KUBECONFIG (default ~/.shoal/kubeconfig),
#   SHOAL_UP_ARGS (extra `shoal up` flags, e.g. "--bridge t0 --cluster-cidr 10.99.0.0/16" to run
#   beside another cluster on this host). The registry's pid is in $SHOAL_DATA/registry/registry.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SHOAL_DATA:-/var/lib/shoal}
REG_PORT=${SHOAL_REGISTRY_PORT:-5000}
API_PORT=${SHOAL_API_PORT:-6443}
REG=127.0.0.1:$REG_PORT
export KUBECONFIG=${KUBECONFIG:-$HOME/.shoal/kubeconfig}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Installing shoal and its system packages"
bash scripts/install.sh
# The venv's shoal (install.sh also links it as /usr/local/bin/shoal), shown as plain `shoal`.
shoal() { .venv/bin/shoal "$@"; }
SHOAL=shoal

step "Starting a local OCI registry on $REG (Debian's docker-registry)"
mkdir -p "$DATA/registry"
if curl -fsS "http://$REG/v2/" >/dev/null 2>&1; then
  echo "registry already running on $REG"
else
  cat > "$DATA/registry/config.yml" <<CFG
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $DATA/registry/storage}, delete: {enabled: true}}
http: {addr: "127.0.0.1:$REG_PORT"}
CFG
  setsid nohup /usr/bin/docker-registry serve "$DATA/registry/config.yml" >"$DATA/registry/registry.log" 2>&1 &
  echo $! > "$DATA/registry/registry.pid"
  for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://$REG/v2/" >/dev/null || { echo "the registry did not start: see $DATA/registry/registry.log" >&2; exit 1; }
fi

step "Building the demo images from busybox-static and pushing them"
# (not through `run`: its echo of the command would land in the JSON file)
printf '\033[2m$ %s\033[0m\n' "shoal images build-demo --cache $DATA/demo-images --push $REG -o json > $DATA/demo-images.json"
$SHOAL images build-demo --cache "$DATA/demo-images" --push "$REG" -o json > "$DATA/demo-images.json"
V2=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['web:v2'])" "$DATA/demo-images.json")
echo "web:v2 is $V2"

step "Starting the cluster: shoal up --detach"
# shellcheck disable=SC2086  # SHOAL_UP_ARGS is a list of flags
run $SHOAL up --detach --data-dir "$DATA" --listen "127.0.0.1:$API_PORT" ${SHOAL_UP_ARGS:-}

step "Applying manifests/demo.yaml"
if [ "$REG_PORT" = 5000 ]; then
  run $SHOAL apply -f manifests/demo.yaml
else
  # The manifest names the registry at 127.0.0.1:5000: apply a copy that names ours.
  DEMO_MANIFEST="$DATA/demo.yaml"
  sed "s#127\.0\.0\.1:5000/#$REG/#g" manifests/demo.yaml > "$DEMO_MANIFEST"
  echo "(manifests/demo.yaml with the registry at $REG: $DEMO_MANIFEST)"
  run $SHOAL apply -f "$DEMO_MANIFEST"
fi
# A second run starts from v1 again, so that the rollout below really happens.
run $SHOAL set image deployment/web "web=$REG/web:v1" >/dev/null
run $SHOAL rollout status deployment/web --timeout 180s
run $SHOAL get deployments,pods -o wide

step "Rolling out web v2 by digest"
run $SHOAL set image deployment/web "web=$V2"
run $SHOAL rollout status deployment/web --timeout 180s
run $SHOAL rollout history deployment/web
# A Ready web pod that is not on its way out (old v1 pods may still be terminating).
POD_IP=$($SHOAL get pods -l app=web -o json | python3 -c "
import json, sys
for p in json.load(sys.stdin)['items']:
    ready = any(c['type'] == 'Ready' and c['status'] == 'True' for c in p['status'].get('conditions') or [])
    if ready and not p['metadata'].get('deletionTimestamp') and p['status'].get('podIP'):
        print(p['status']['podIP']); break")
run curl -fsS "http://$POD_IP:8080/"

step "A health-check-driven restart: flaky's /healthz fails after 20 s, its liveness probe restarts it"
FLAKY=$($SHOAL get pods -l app=flaky -o name | head -1)
n=0
for _ in $(seq 90); do
  n=$($SHOAL get "$FLAKY" -o json | python3 -c "import json,sys; s=json.load(sys.stdin)['status'].get('containerStatuses') or [{}]; print(s[0].get('restartCount',0))")
  [ "${n:-0}" -ge 1 ] && break
  sleep 1
done
run $SHOAL get pods -o wide
run $SHOAL describe "$FLAKY"
if [ "${n:-0}" -lt 1 ]; then
  echo "demo: $FLAKY was not restarted within 90 s: see its events above and $DATA/up.log" >&2
  exit 1
fi

DOWN="shoal down"
[ "$DATA" = /var/lib/shoal ] || DOWN="shoal down --data-dir $DATA"
step "Done. The cluster keeps running. Try:"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG
  shoal get deployments,pods                      # what runs
  shoal get pods -o wide -w                       # watch pods (flaky keeps restarting)
  shoal rollout undo deployment/web               # back to v1
  shoal scale deployment/web --replicas 5
  shoal logs -f $FLAKY
  shoal apply -f manifests/probes.yaml            # more examples in manifests/
  kubectl get pods                                # kubectl reads the same kubeconfig (HTTPS, CA, token)
  $DOWN   # stop the cluster (containers stop too)
TXT
