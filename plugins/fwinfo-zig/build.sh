#!/usr/bin/env bash
# Builds the fwinfo-zig plugin: build.sh OUT.wasm
#
#   ZIG               the compiler command (default: python3 -m ziglang, the
#                     PyPI build: pip install ziglang==0.17.1)
#   RELAY_GUEST_SDK   the guest-sdk directory (default: this repo's)
#   RELAY_ZIG_CACHE   Zig's cache directory (default: <repo>/target/zig-cache)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
out=$1

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
kit=${RELAY_GUEST_SDK:-$here/../../guest-sdk}/zig
# Caches outside the source tree: target/ is already ignored by git.
cache=${RELAY_ZIG_CACHE:-$here/../../target/zig-cache}
read -r -a zig <<< "${ZIG:-python3 -m ziglang}"

# The kit uses 0.17 language and std APIs (@Int, std.mem.Alignment, ...);
# Zig changes these between minor versions, so refuse any other one.
version=$("${zig[@]}" version 2>/dev/null) || version=""
if [[ $version != 0.17* ]]; then
    echo "error: Zig 0.17 is required (\`${zig[*]} version\` gave '${version:-nothing}')." >&2
    echo "       Install it with: pip install ziglang==0.17.1  (or set ZIG to a 0.17 compiler)" >&2
    exit 1
fi
if [[ ! -f $kit/relay.zig ]]; then
    echo "error: the Zig guest kit is not at $kit (set RELAY_GUEST_SDK)" >&2
    exit 1
fi

mkdir -p -- "$(dirname -- "$out")" "$cache"

# -fno-entry: a plugin is a library-like module with no _start.
# --stack 65536: Zig's default 1 MiB stack costs 16 pages of every instance
#   and exceeds the host's stack allowance; handlers keep big data in the arena.
# --export=...: exactly the ABI's exports (plus memory, always exported);
#   -rdynamic would export every `export fn` and the host refuses extras.
"${zig[@]}" build-exe \
    -target wasm32-freestanding -fno-entry -O ReleaseSmall -fstrip \
    --stack 65536 \
    --export=describe --export=handle \
    --export=cabi_post_describe --export=cabi_post_handle --export=cabi_realloc \
    --cache-dir "$cache" --global-cache-dir "$cache/global" \
    --name fwinfo-zig -femit-bin="$out" \
    --dep relay -Mroot="$here/main.zig" -Mrelay="$kit/relay.zig"

echo "built $out ($(wc -c < "$out") bytes)"
