#!/usr/bin/env bash
# `make demo`: a local cluster on two real nodes, Membrane installed with its chart as real pods, and the empire/deathstar/xwing story told across the nodes with real commands, real output and checked outcomes.
#
# How Membrane is installed here: `bin/membrane dev up --nodes 2` starts the local control plane (kube-apiserver,
# scheduler, controller manager), two real nodes (each its own network and mount namespaces, Debian's containerd, the
# pinned kubelet and kube-proxy, joined by an underlay link), CoreDNS, and runs `helm install` of charts/membrane with
# the Membrane image built from this checkout: the operator, the webhook, an agent and an L7 proxy on each node run as
# pods, and every other pod gets its network from Membrane's CNI plugin through the kubelet. The story's pods run
# agnhost (the upstream e2e suite's workload, built here under registry.k8s.io/e2e-test-images/agnhost:2.63.0): the
# deathstar, on the first node, answers every HTTP request with "Ship landed"; the ships, on the last node, send
# theirs with busybox's nc, so every request of the story crosses from one node to the other (VXLAN, the sender's
# identity in the VNI) and the deathstar's node enforces the policy.
#
# Environment: MEMBRANE_DEV_DIR (state dir) and MEMBRANE_DEV_PREFIX (node name prefix) are passed on to
# `bin/membrane dev`, so a test can run the demo beside a developer's `dev up`; MEMBRANE_DEMO_NODES (default 2) is
# `dev up`'s --nodes (1: every pod on the one node).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
membrane="bin/membrane"
prefix="${MEMBRANE_DEV_PREFIX:-}"
agnhost="registry.k8s.io/e2e-test-images/agnhost:2.63.0"
nodes="${MEMBRANE_DEMO_NODES:-2}"
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { printf 'demo: MEMBRANE_DEMO_NODES: must be a node count of at least 1, got "%s"\n' "$nodes" >&2; exit 2; }
# The deathstar on the first node, the ships on the last: with two nodes or more, every request crosses between them.
deathstar_node="${prefix}node-1"
ships_node="${prefix}node-${nodes}"

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

# request FROM METHOD PATH WANT: FROM's HTTP request to the deathstar, sent until its verdict is WANT (policies take
# effect within seconds; at most 20 tries). The verdict is the answer's status and body ("200 Ship landed",
# "403 Access denied") or "timeout" when nothing answers within 2 s (a dropped connection).
request() {
  local from="$1" method="$2" path="$3" want="$4" got="" i
  # nc half-closes its side after the request; the L7 proxy still answers it.
  local cmd="printf '$method $path HTTP/1.0\\r\\nHost: deathstar\\r\\n\\r\\n' | nc -w 2 $deathstar 80"
  for i in $(seq 20); do
    got="$(kubectl exec "$from" -- sh -c "$cmd" 2>/dev/null | tr -d '\r' | awk 'NR == 1 { status = $2 } /^$/ { body = 1; next } body { text = text (text == "" ? "" : " ") $0 } END { print (status == "" ? "timeout" : status " " text) }' || true)"
    [ "$got" = "$want" ] && break
    sleep 1
  done
  printf '\n$ kubectl exec %s -- sh -c "%s"\n%s\n' "$from" "$cmd" "$got"
  [ "$got" = "$want" ] || fail "$from: $method $path: expected \"$want\", got \"$got\""
}

chapter "A local cluster on $nodes real node$([ "$nodes" -eq 1 ] || echo s): the control plane, containerd and the kubelet, and Membrane installed by its chart"
# The components' JSON logs go to a file; on a failure its tail is printed.
uplog="$(mktemp -t membrane-demo-up.XXXXXX)"
trap 'rm -f "$uplog"' EXIT
printf '\n$ %s\n' "bin/membrane dev up --nodes $nodes"
"$membrane" dev up --nodes "$nodes" 2>"$uplog" || { tail -n 40 "$uplog" >&2; fail "dev up failed"; }
env_line="$("$membrane" dev env)"
eval "$env_line"
export KUBECONFIG
devdir="$(dirname "$KUBECONFIG")"
kubectl() { command kubectl --cache-dir="$devdir/kube-cache" "$@"; }
show kubectl get nodes -o wide
for i in $(seq "$nodes"); do expect_out "^${prefix}node-${i} +Ready .*containerd://"; done
say "(Membrane's operator and webhook, and on every node an agent and an L7 proxy, are pods of the chart, from the image built from this checkout:)"
show kubectl get pods -n membrane-system -o wide
for i in $(seq "$nodes"); do
  expect_out "membrane-agent-[a-z0-9]+ +1/1 +Running .* ${prefix}node-${i} "
  expect_out "membrane-l7proxy-[a-z0-9]+ +1/1 +Running .* ${prefix}node-${i} "
done
expect_out "membrane-operator-[a-z0-9]+-[a-z0-9]+ +1/1 +Running"
expect_out "membrane-webhook-[a-z0-9]+-[a-z0-9]+ +1/1 +Running"
show kubectl get ciliumnodes
for i in $(seq "$nodes"); do expect_out "^${prefix}node-${i} "; done
say "(The chart's least-privilege RBAC, asked as the agent's ServiceAccount: it may read CiliumNodes; it may not write policies or read Secrets.)"
agent_sa=system:serviceaccount:membrane-system:membrane-agent
show kubectl auth can-i list ciliumnodes.cilium.io --as="$agent_sa" -A
expect_out "^yes$"
show kubectl auth can-i create ciliumnetworkpolicies.cilium.io --as="$agent_sa" -n default
expect_out "^no$"
show kubectl auth can-i get secrets --as="$agent_sa" -n membrane-system
expect_out "^no$"

chapter "The demo application: a deathstar, a tiefighter and an xwing, pods on Membrane's network"
if [ "$nodes" -gt 1 ]; then
  say "(The deathstar on ${deathstar_node}, the tiefighter and the xwing on ${ships_node}: every request below crosses from one node to the other, and the deathstar's node enforces the policies.)"
fi
manifest="$(cat <<YAML
apiVersion: v1
kind: Pod
metadata: { name: deathstar, namespace: default, labels: { org: empire, class: deathstar } }
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: { kubernetes.io/hostname: ${deathstar_node} }
  containers:
    - name: deathstar
      image: ${agnhost}
      args: [netexec, --http-port=80, --udp-port=-1, "--http-override=/echo?msg=Ship%20landed"]
      ports: [{ containerPort: 80, protocol: TCP }]
---
apiVersion: v1
kind: Pod
metadata: { name: tiefighter, namespace: default, labels: { org: empire, class: tiefighter } }
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: { kubernetes.io/hostname: ${ships_node} }
  containers: [{ name: spaceship, image: ${agnhost}, args: [pause] }]
---
apiVersion: v1
kind: Pod
metadata: { name: xwing, namespace: default, labels: { org: alliance, class: xwing } }
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: { kubernetes.io/hostname: ${ships_node} }
  containers: [{ name: spaceship, image: ${agnhost}, args: [pause] }]
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$manifest"
kubectl apply -f - <<<"$manifest"
show kubectl wait pod deathstar tiefighter xwing --for=condition=Ready --timeout=180s
expect_ok
show kubectl get pods -o wide --show-labels
expect_out "^deathstar +1/1 +Running .* ${deathstar_node} "
expect_out "^tiefighter +1/1 +Running .* ${ships_node} "
expect_out "^xwing +1/1 +Running .* ${ships_node} "
deathstar="$(kubectl get pod deathstar -o jsonpath='{.status.podIP}')"
[ -n "$deathstar" ] || fail "the deathstar has no IP"

chapter "No policy: everyone may land on the deathstar"
if [ -n "$(kubectl get cnp default-deny rule1 --ignore-not-found -o name)" ]; then
  say "(A previous run's policies are still here: the story starts again without them.)"
  show kubectl delete cnp default-deny rule1 --ignore-not-found
  expect_ok
fi
request tiefighter POST /v1/request-landing "200 Ship landed"
request xwing POST /v1/request-landing "200 Ship landed"

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
request tiefighter POST /v1/request-landing timeout
request xwing POST /v1/request-landing timeout

chapter "A label-based allow (L3/L4): the empire may land on the deathstar on TCP 80; the alliance may not"
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
request tiefighter POST /v1/request-landing "200 Ship landed"
request xwing POST /v1/request-landing timeout
say "(But any empire ship may also do this:)"
request tiefighter PUT /v1/exhaust-port "200 Ship landed"

chapter "An HTTP-aware rule (L7): the empire may only POST /v1/request-landing; PUT /v1/exhaust-port is refused"
rule1_l7="$(cat <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: rule1, namespace: default }
spec:
  description: "L7 policy to restrict access to specific HTTP call"
  endpointSelector:
    matchLabels: { org: empire, class: deathstar }
  ingress:
    - fromEndpoints:
        - matchLabels: { org: empire }
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules:
            http:
              - method: POST
                path: /v1/request-landing
YAML
)"
printf '\n$ kubectl apply -f - <<YAML\n%s\nYAML\n' "$rule1_l7"
kubectl apply -f - <<<"$rule1_l7"
show kubectl wait cnp rule1 --for=condition=Enforced --timeout=60s
expect_ok
request tiefighter PUT /v1/exhaust-port "403 Access denied"
request tiefighter POST /v1/request-landing "200 Ship landed"
request xwing POST /v1/request-landing timeout

chapter "A bad policy is rejected at the door by the webhook pod, with the field and the reason"
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
say "(ENFORCED counts the nodes that acknowledged a policy out of those hosting the endpoints it selects$([ "$nodes" -eq 1 ] || echo ": default-deny's are both nodes, rule1's the deathstar's").)"
show kubectl get cnp
expect_out "rule1 +True +[0-9]+/[0-9]+"
expect_out "default-deny +True"
show kubectl get cnp rule1 -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
expect_out "Valid=True"
expect_out "Enforced=True"

chapter "What the agents saw: the xwing's drop and the refused PUT, with no --server"
# No --server and no TLS flags: observe finds every agent through its CiliumNode and dials it with the chart's
# Hubble client certificate, which dev up saved in the dev dir.
say "(observe asks every node's agent; both verdicts were made on the deathstar's node, ${deathstar_node}.)"
show "$membrane" observe --verdict DROPPED --from-pod default/xwing --to-pod default/deathstar --last 3
expect_ok
expect_out "DROPPED"
expect_out "default/xwing"
show "$membrane" observe --from-pod default/tiefighter --protocol HTTP --http-method PUT --last 2
expect_ok
expect_out "PUT"
expect_out "/v1/exhaust-port"

cat <<MSG

demo: the story happened as told. The cluster keeps running; continue with:
  export MEMBRANE_DEV_DIR=$devdir MEMBRANE_DEV_PREFIX=$prefix
  eval "\$(bin/membrane dev env)"
  kubectl get cnp,pods -o wide
  kubectl exec xwing -- sh -c "printf 'POST /v1/request-landing HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $deathstar 80"
  bin/membrane observe -f
Tear it all down (nodes, pods, processes, pinned maps, files; host settings restored):
  MEMBRANE_DEV_DIR=$devdir MEMBRANE_DEV_PREFIX=$prefix bin/membrane dev down
MSG
