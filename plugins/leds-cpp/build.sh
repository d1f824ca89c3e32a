#!/usr/bin/env bash
# Builds the leds-cpp plugin: build.sh OUT.wasm
# A freestanding wasm32 module (no libc, no libc++, no WASI): C++17 without
# exceptions or RTTI; the kit in guest-sdk/c provides the ABI glue, the
# arena and memcpy/memset.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
sdk="${RELAY_GUEST_SDK:-$here/../../guest-sdk}/c"
cd "$here"
"${CXX:-clang++}" --target=wasm32-unknown-unknown -std=c++17 -Oz -Wall -Wextra -Werror \
    -fno-exceptions -fno-rtti -nostdlib -ffreestanding -mbulk-memory -I "$sdk" \
    -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
    -Wl,--initial-memory=131072 -Wl,--strip-all \
    src/leds.cpp -o "$out"
