# Sourced by the real nodes' image scripts: writes an OCI image archive (an image layout in a tar) that
# `ctr images import` takes with the reference it carries. No registry, no container engine.
# shellcheck shell=bash

# oci_archive OUT REF CONFIG_JSON LAYER_TAR...: the layers (uncompressed tars, bottom first) as blobs, the image
# config (CONFIG_JSON is its `config` part: Entrypoint, Env, …), the manifest and index.json with the reference as
# containerd's image-name annotation, written reproducibly (sorted, owner 0, time 0) to OUT via a temporary file.
oci_archive() {
  local out="$1" ref="$2" config_json="$3"
  shift 3
  local layout
  layout="$(mktemp -d)"
  mkdir -p "$layout/blobs/sha256"
  local diff_ids="[]" layers="[]" layer layer_sha layer_size
  for layer in "$@"; do
    layer_sha="$(sha256sum "$layer" | cut -d' ' -f1)"
    layer_size="$(stat -c %s "$layer")"
    cp "$layer" "$layout/blobs/sha256/$layer_sha"
    diff_ids="$(jq -c --arg d "sha256:$layer_sha" '. + [$d]' <<<"$diff_ids")"
    layers="$(jq -c --arg d "sha256:$layer_sha" --argjson s "$layer_size" \
      '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $d, size: $s}]' <<<"$layers")"
  done
  _oci_blob() { # writes stdin as a blob, prints "sha size"
    local tmp="$layout/blob.tmp" sha
    cat >"$tmp"
    sha="$(sha256sum "$tmp" | cut -d' ' -f1)"
    echo "$sha $(stat -c %s "$tmp")"
    mv "$tmp" "$layout/blobs/sha256/$sha"
  }
  local config manifest
  config="$(jq -c --argjson diffs "$diff_ids" '{architecture: "amd64", os: "linux", config: ., rootfs: {type: "layers", diff_ids: $diffs}}' <<<"$config_json" | _oci_blob)"
  manifest="$(jq -nc --arg c "sha256:${config% *}" --argjson cs "${config#* }" --argjson layers "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}, layers: $layers}' | _oci_blob)"
  jq -nc --arg m "sha256:${manifest% *}" --argjson ms "${manifest#* }" --arg ref "$ref" --arg tag "${ref##*:}" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
                   annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag}}]}' >"$layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$layout" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$layout"
}

# rootfs_layer DIR OUT_TAR: DIR as one layer, reproducibly.
rootfs_layer() {
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf "$2" .
}
