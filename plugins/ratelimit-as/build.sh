#!/usr/bin/env bash
# Builds the ratelimit-as plugin: build.sh OUT.wasm (from any directory).
#
# The compiler is the kit's pinned assemblyscript (guest-sdk/assemblyscript/
# package-lock.json), installed on first use with `npm ci`. RELAY_GUEST_SDK
# points at another guest-sdk directory (one holding assemblyscript/).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT.wasm" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kit="$(cd "${RELAY_GUEST_SDK:-$here/../../guest-sdk}/assemblyscript" && pwd)"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if [ ! -d "$kit/node_modules" ]; then
  (cd "$kit" && npm ci --silent)
fi

# Plugins import the kit as the package `relay-guest-as`; asc resolves a
# package from node_modules or from a --path directory holding it by name,
# so a throwaway directory with that one link serves both an in-tree kit
# and one given by RELAY_GUEST_SDK.
pkgs="$(mktemp -d)"
trap 'rm -rf "$pkgs"' EXIT
ln -s "$kit" "$pkgs/relay-guest-as"

# --runtime stub: bump allocator, no GC; the kit rewinds it after each call.
# --use abort=...: the kit's trap instead of an `env.abort` import (the host
#   grants only relay:plugin/host imports).
# -O3z: full optimisation, shrinking for size (19 KB at -O3, 14 KB here).
# --noAssert: assertions would only trap, same as the bounds they guard.
"$kit/node_modules/.bin/asc" "$here/assembly/index.ts" \
  --path "$pkgs" \
  --runtime stub \
  --use abort=~lib/relay-guest-as/assembly/relay/relayAbort \
  -O3z --noAssert \
  --outFile "$out"

# The host accepts no other imports; fail here, not at load time on a device.
node -e '
const fs = require("fs");
const m = new WebAssembly.Module(fs.readFileSync(process.argv[1]));
const bad = WebAssembly.Module.imports(m).filter(i => i.module !== "relay:plugin/host@0.1.0");
if (bad.length) {
  console.error("unexpected imports: " + bad.map(i => i.module + "." + i.name).join(", "));
  process.exit(1);
}' "$out"
