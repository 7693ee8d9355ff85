#!/usr/bin/env bash
# `make demo`: two local nodes, Membrane installed with its chart, the empire/deathstar/xwing story told with real commands, real output and checked outcomes.
#
# How Membrane is installed here: the local cluster has a real kube-apiserver, kube-scheduler and
# kube-controller-manager but no container runtime: the chart's Deployments and DaemonSet get pods,
# which the local kubelet runs as stand-in processes that only answer on their ports.
# `helm install` puts in the chart's API objects (CRDs, ServiceAccounts, RBAC, the agents'
# ValidatingAdmissionPolicy, the distribution TLS Secrets, the Deployment/DaemonSet specs), and the
# same `membrane operator|webhook|agent` binaries run as local processes started by `dev up`. The
# chart's webhook configuration reaches the webhook through a Service, which nothing routes here, so
# the chart is installed with webhook.enabled=false and `dev up`'s webhook registers the same
# configuration (membrane-policy-validation) by URL instead. `dev up` also makes the TLS Secrets namespace
# (membrane-secrets), so the chart is told to use it rather than create it.
#
# Environment: MEMBRANE_DEV_DIR (state dir) and MEMBRANE_DEV_PREFIX (node/netns name prefix) are
# passed on to `bin/membrane dev`, so a test can run the demo beside a developer's `dev up`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
membrane="bin/membrane"
prefix="${MEMBRANE_DEV_PREFIX:-}"

step=0
bold="" plain=""
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
chapter() { step=$((step + 1)); printf '\n%s== %d. %s%s\n' "$bold" "$step" "$1" "$plain"; }
say() { printf '%s\n' "$*"; }
fail() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }

# show CMD...: prints the command, runs it, prints its output; the output is in $out, the exit code in $rc.
show() {
  printf '\n$ %s\n' "$*"
  set +e
  out="$("$@" 2>&1)"
  rc=$?
  set -e
  [ -n "$out" ] && printf '%s\n' "$out"
  return 0
}
expect_ok() { [ "$rc" -eq 0 ] || fail "expected success, got exit $rc"; }
expect_out() { grep -qE -- "$1" <<<"$out" || fail "expected the output to match /$1/"; }

# probe FROM TO_IP WANT: `dev probe` until it prints WANT (policies take effect within seconds), at most 30 s.
probe() {
  local from="$1" ip="$2" want="$3" got="" i
  for i in $(seq 30); do
    got="$("$membrane" dev probe "default/$from" "$ip" 80 2>&1 || true)"
    [ "$got" = "$want" ] && break
    sleep 1
  done
  printf '\n$ bin/membrane dev probe default/%s %s 80\n%s\n' "$from" "$ip" "$got"
  [ "$got" = "$want" ] || fail "$from -> deathstar:80: expected \"$want\", got \"$got\""
}

chapter "A local cluster: a real API server, two nodes (network namespaces), the operator, the webhook and an agent per node"
# The components' JSON logs go to a file; on a failure its tail is printed.
uplog="$(mktemp -t membrane-demo-up.XXXXXX)"
trap 'rm -f "$uplog"' EXIT
printf '\n$ %s\n' "bin/membrane dev up --nodes 2"
"$membrane" dev up --nodes 2 2>"$uplog" || { tail -n 40 "$uplog" >&2; fail "dev up failed"; }
env_line="$("$membrane" dev env)"
eval "$env_line"
export KUBECONFIG
devdir="$(dirname "$KUBECONFIG")"
# The control plane's helm, with its state beside the control plane's files.
helm_bin="$(bash localcluster/controlplane/build.sh 2>/dev/null | tail -n 1)/helm"
export HELM_CACHE_HOME="$devdir/helm/cache" HELM_CONFIG_HOME="$devdir/helm/config" HELM_DATA_HOME="$devdir/helm/data"
kubectl() { command kubectl --cache-dir="$devdir/kube-cache" "$@"; }
helm() { "$helm_bin" "$@"; }
show kubectl get nodes -o wide
expect_out "${prefix}node-1 +Ready"
expect_out "${prefix}node-2 +Ready"

chapter "Install Membrane with its chart"
show helm upgrade --install membrane charts/membrane -n membrane-system --create-namespace --set webhook.enabled=false --set tls.secretsNamespace.create=false
expect_ok
expect_out "STATUS: deployed"
show kubectl get serviceaccounts,clusterroles,validatingadmissionpolicies -l app.kubernetes.io/instance=membrane -A
expect_out "membrane-agent"
say "(The chart's least-privilege RBAC, asked as the agent's ServiceAccount: it may read CiliumNodes; it may not write policies or read Secrets.)"
agent_sa=system:serviceaccount:membrane-system:membrane-agent
show kubectl auth can-i list ciliumnodes.cilium.io --as="$agent_sa" -A
expect_out "^yes$"
show kubectl auth can-i create ciliumnetworkpolicies.cilium.io --as="$agent_sa" -n default
expect_out "^no$"
show kubectl auth can-i get secrets --as="$agent_sa" -n membrane-system
expect_out "^no$"
say "(No container runtime here: the chart's Deployment and DaemonSet get pods, but the local kubelet runs each as a stand-in that only answers on its ports; the real binaries run as local processes:)"
show "$membrane" dev status
show kubectl get validatingwebhookconfiguration membrane-policy-validation
expect_ok

chapter "The demo application: a deathstar, a tiefighter and an xwing, spread over both nodes"
manifest="$(cat <<YAML
apiVersion: v1
kind: Pod
metadata: { name: deathstar, namespace: default, labels: { org: empire, class: deathstar } }
spec:
  nodeName: ${prefix}node-1
  automountServiceAccountToken: false
  containers: [{ name: deathstar, image: docker.io/cilium/starwars, ports: [{ containerPort: 80, protocol: TCP }] }]
---
apiVersion: v1
kind: Pod
metadata: { name: tiefighter, namespace: default, labels: { org: empire, class: tiefighter } }
spec:
  nodeName: ${prefix}node-2
  automountServiceAccountToken: false
  containers: [{ name: spaceship, image: docker.io/cilium/json-mock, ports: [{ containerPort: 8080, protocol: TCP }] }]
---
apiVersion: v1
kind: Pod
metadata: { name: xwing, namespace: default, labels: { org: alliance, class: xwing } }
spec:
  nodeName: ${prefix}node-1
  automountServiceAccountToken: false
  containers: [{ name: spaceship, image: docker.io/cilium/json-mock, ports: [{ containerPort: 8080, protocol: TCP }] }]
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$manifest"
kubectl apply -f - <<<"$manifest"
show kubectl wait pod deathstar tiefighter xwing --for=condition=Ready --timeout=120s
expect_ok
show kubectl get pods -o wide --show-labels
deathstar="$(kubectl get pod deathstar -o jsonpath='{.status.podIP}')"
[ -n "$deathstar" ] || fail "the deathstar has no IP"

chapter "No policy: everyone may land on the deathstar (tiefighter from the other node, xwing from the same node)"
if [ -n "$(kubectl get cnp default-deny rule1 --ignore-not-found -o name)" ]; then
  say "(A previous run's policies are still here: the story starts again without them.)"
  show kubectl delete cnp default-deny rule1 --ignore-not-found
  expect_ok
fi
probe tiefighter "$deathstar" connected
probe xwing "$deathstar" connected

chapter "A default deny: a policy that selects every endpoint and allows nothing in"
default_deny="$(cat <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: default-deny, namespace: default }
spec:
  endpointSelector: {}
  ingress: [{}]
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$default_deny"
kubectl apply -f - <<<"$default_deny"
show kubectl wait cnp default-deny --for=condition=Enforced --timeout=60s
expect_ok
probe tiefighter "$deathstar" timeout
probe xwing "$deathstar" timeout

chapter "A label-based allow: the empire may land on the deathstar on TCP 80; the alliance may not"
rule1="$(cat <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: rule1, namespace: default }
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector:
    matchLabels: { org: empire, class: deathstar }
  ingress:
    - fromEndpoints:
        - matchLabels: { org: empire }
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$rule1"
kubectl apply -f - <<<"$rule1"
show kubectl wait cnp rule1 --for=condition=Enforced --timeout=60s
expect_ok
probe tiefighter "$deathstar" connected
probe xwing "$deathstar" timeout

chapter "A bad policy is rejected at the door, with the field and the reason"
bad="$(cat <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: xwing-escape, namespace: default }
spec:
  endpointSelector:
    matchLabels: { class: xwing }
  egress:
    - toCIDRSet:
        - cidr: 10.0.0.0/8
          except: [11.0.0.0/16]
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$bad"
set +e
out="$(kubectl apply -f - <<<"$bad" 2>&1)"
rc=$?
set -e
printf '%s\n' "$out"
[ "$rc" -ne 0 ] || fail "the bad policy was accepted"
expect_out 'admission webhook "policies.membrane.io" denied the request: spec\.egress\[0\]\.toCIDRSet\[0\]\.except\[0\]'
show kubectl get cnp xwing-escape
expect_out "NotFound"

chapter "The policies and their conditions"
show kubectl get cnp
expect_out "rule1 +True +[0-9]+/[0-9]+"
expect_out "default-deny +True"
show kubectl get cnp rule1 -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
expect_out "Valid=True"
expect_out "Enforced=True"

chapter "The xwing's attempt, seen by the deathstar's node as a drop"
# No --server: observe finds every agent's observer through the cluster (their CiliumNodes).
show "$membrane" observe --verdict DROPPED --from-pod default/xwing --to-pod default/deathstar --last 3
expect_ok
expect_out "DROPPED"
expect_out "default/xwing"

cat <<MSG

demo: the story happened as told. The cluster keeps running; continue with:
  export MEMBRANE_DEV_DIR=$devdir MEMBRANE_DEV_PREFIX=$prefix
  eval "\$(bin/membrane dev env)"
  kubectl get cnp,pods -o wide
  bin/membrane dev probe default/xwing $deathstar 80
  bin/membrane observe -f
Tear it all down (processes, nodes, pinned maps, files):
  MEMBRANE_DEV_DIR=$devdir MEMBRANE_DEV_PREFIX=$prefix bin/membrane dev down
MSG
