#!/usr/bin/env bash
# Installs everything Membrane's build and tests need on a fresh machine; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_packages=(clang llvm libbpf-dev libelf-dev zlib1g-dev linux-libc-dev iproute2 nftables iptables
  iputils-ping netcat-openbsd openssl wireguard-go wireguard-tools jq
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

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.membrane-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund
  cp package-lock.json "$stamp"
fi

# The control plane (kube-apiserver + etcd, helm) from pinned Go modules, cached by version.
if [ -x e2e/controlplane/build.sh ]; then e2e/controlplane/build.sh; fi
# The eBPF objects.
if [ -f bpf/Makefile ]; then make -s -C bpf; fi
