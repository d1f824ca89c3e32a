#!/usr/bin/env bash
# Builds this plugin: ./build.sh [OUT.wasm] (default {{name}}.wasm).
# Needs Zig 0.17 (pip install ziglang==0.17.1, or ZIG=<compiler>); the kit is in relay/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
read -r -a zig <<< "${ZIG:-python3 -m ziglang}"
cache="${RELAY_ZIG_CACHE:-$here/.zig-cache}"
# --stack 65536: Zig's 1 MiB default stack would cost 16 pages per instance.
# --export=...: exactly the ABI's exports; the host refuses extra ones.
"${zig[@]}" build-exe -target wasm32-freestanding -fno-entry -O ReleaseSmall -fstrip \
    --stack 65536 \
    --export=describe --export=handle \
    --export=cabi_post_describe --export=cabi_post_handle --export=cabi_realloc \
    --cache-dir "$cache" --global-cache-dir "$cache/global" \
    --name "{{name}}" -femit-bin="$out" \
    --dep relay -Mroot="$here/src/plugin.zig" -Mrelay="$here/relay/relay.zig"
echo "$out"
