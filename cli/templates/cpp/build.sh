#!/usr/bin/env bash
# Builds this plugin: ./build.sh [OUT.wasm] (default {{name}}.wasm).
# A freestanding wasm32 module (no libc, no WASI); the kit is in relay/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/{{name}}.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
"${CXX:-clang++}" --target=wasm32-unknown-unknown -std=c++17 -fno-exceptions -fno-rtti -Oz -Wall -Wextra -Werror \
    -nostdlib -ffreestanding -mbulk-memory -I relay \
    -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
    -Wl,--initial-memory=131072 -Wl,--strip-all \
    src/plugin.cpp -o "$out"
echo "$out"
