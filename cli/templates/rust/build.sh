#!/usr/bin/env bash
# Builds this plugin: ./build.sh [OUT.wasm] (default {{name}}.wasm).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/{{name}}.wasm}")"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# From the project dir, so cargo reads its .cargo/config.toml (the stack size).
cd "$here"
cargo build --profile wasm --target wasm32-unknown-unknown
target="${CARGO_TARGET_DIR:-$here/target}"
cp "$target/wasm32-unknown-unknown/wasm/{{crate_file}}.wasm" "$out"
echo "$out"
