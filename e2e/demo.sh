#!/usr/bin/env bash
# `make demo`: brings up the local control plane, installs the CRDs and the example policies, and says what to type next.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bin/membrane dev up
env_line="$(bin/membrane dev env)" # an assignment, so `set -e` sees a failure
eval "$env_line"
export KUBECONFIG

if compgen -G "crds/generated/*.yaml" >/dev/null; then
  echo "demo: installing the CRDs from crds/generated/"
  kubectl apply -f crds/generated/
  # Wait for every CRD we just applied to be Established before creating objects of its kinds.
  # (Polled: `kubectl wait` fails when a CRD is so new that it has no conditions yet.)
  for _ in $(seq 120); do
    pending=$(kubectl get -f crds/generated/ -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}' | grep -vc '=True$' || true)
    [ "$pending" -eq 0 ] && break
    sleep 0.5
  done
  [ "$pending" -eq 0 ] || { echo "demo: CRDs not Established after 60 s" >&2; exit 1; }
else
  echo "demo: crds/generated/ has no manifests yet; skipping the CRDs"
fi

if [ -f crds/examples/seed.yaml ]; then
  echo "demo: applying the example policies from crds/examples/seed.yaml"
  kubectl apply -f crds/examples/seed.yaml
fi

echo
if kubectl get crd ciliumnetworkpolicies.cilium.io >/dev/null 2>&1; then
  kubectl get cnp,ccnp -A
fi

cat <<MSG

The local control plane is running ($(bin/membrane dev status | sed -n 's/^server: //p')).
Use kubectl against it:
  eval "\$(bin/membrane dev env)"
  kubectl get cnp,ccnp -A
  kubectl explain cnp.spec.egress.toFQDNs
Tear it down (no process or file left behind):
  bin/membrane dev down
MSG
