#!/usr/bin/env bash
# Builds this plugin: ./build.sh [OUT.wasm] (default {{name}}.wasm).
# The compiler is the kit's pinned assemblyscript (relay/package-lock.json),
# installed on first use with `npm ci`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
kit="$here/relay"
[ -d "$kit/node_modules" ] || (cd "$kit" && npm ci --silent)
# The plugin imports the kit as the package `relay-guest-as`.
pkgs="$(mktemp -d)"
trap 'rm -rf "$pkgs"' EXIT
ln -s "$kit" "$pkgs/relay-guest-as"
# --runtime stub: a bump allocator the kit rewinds after each call;
# --use abort=...: a trap instead of an `env.abort` import the host refuses.
"$kit/node_modules/.bin/asc" "$here/assembly/index.ts" --path "$pkgs" \
  --runtime stub --use abort=~lib/relay-guest-as/assembly/relay/relayAbort \
  -O3z --noAssert --outFile "$out"
echo "$out"
