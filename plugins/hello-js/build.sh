#!/usr/bin/env bash
# Builds the hello-js plugin: build.sh OUT.wasm
# (HELLO_JS_SCRIPT=other.js build.sh OUT.wasm builds another script.)
# script.js runs in QuickJS (quickjs-ng, as vendored by the rquickjs-sys crate)
# compiled to one freestanding wasm32 module. Needs clang + wasm-ld, the
# Debian packages wasi-libc (libc.a, headers) and libclang-rt-14-dev-wasm32
# (compiler builtins). QuickJS sources: $QUICKJS_DIR, else the rquickjs-sys
# .crate downloaded once from static.crates.io into $HELLO_JS_CACHE.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
sdk="${RELAY_GUEST_SDK:-$here/../../guest-sdk}/c"
cc="${CC:-clang}"
sysroot="${WASI_SYSROOT:-/usr}"
wasi_inc="$sysroot/include/wasm32-wasi"
wasi_lib="$sysroot/lib/wasm32-wasi"
builtins="${WASM_BUILTINS:-$("$cc" --target=wasm32-wasi -print-libgcc-file-name)}"
for f in "$wasi_inc/stdlib.h" "$wasi_lib/libc.a" "$builtins"; do
    [ -e "$f" ] || { echo "missing $f (apt-get install wasi-libc libclang-rt-14-dev-wasm32)" >&2; exit 1; }
done

crate=rquickjs-sys-0.14.0
sha=cee271d0eeba64f0915b846cb7ae02e16faf3dfdffdca91731101d9d30fe3423
cache="${HELLO_JS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relay-hello-js}"
if [ -z "${QUICKJS_DIR:-}" ]; then
    QUICKJS_DIR="$cache/$crate/quickjs"
    if [ ! -f "$QUICKJS_DIR/quickjs.c" ]; then
        mkdir -p "$cache"
        curl -fsSL -o "$cache/$crate.crate" "https://static.crates.io/crates/rquickjs-sys/$crate.crate"
        echo "$sha  $cache/$crate.crate" | sha256sum -c --quiet
        tar -xzf "$cache/$crate.crate" -C "$cache"
    fi
fi

obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
cflags=(--target=wasm32-wasi -isystem "$wasi_inc" -O2 -mbulk-memory -mmutable-globals -mno-simd128 -D_GNU_SOURCE -DNDEBUG -DEMSCRIPTEN=1 -DFE_DOWNWARD=0 -DFE_UPWARD=0)

# QuickJS objects are cached by source path (they take most of the build time).
qobj="$cache/obj-$(printf '%s' "stack-check-patch $QUICKJS_DIR ${cflags[*]}" | sha256sum | cut -c1-16)"
mkdir -p "$qobj"
# quickjs.c turns its stack check off on __wasi__ (stack_limit = 0); we want it
# on, so that deep recursion is a catchable RangeError rather than the
# engine's stack-overflow trap. A patched copy keeps it on.
patch_wasi() {
    sed -e 's/^#ifdef __wasi__$/#if defined(__wasi__) \&\& !defined(HELLO_JS_STACK_CHECK)/' \
        -e 's/^#if defined(__wasi__)$/#if defined(__wasi__) \&\& !defined(HELLO_JS_STACK_CHECK)/' "$1"
}
for f in quickjs libregexp libunicode dtoa; do
    if [ ! -f "$qobj/$f.o" ] || [ "$QUICKJS_DIR/$f.c" -nt "$qobj/$f.o" ]; then
        src="$QUICKJS_DIR/$f.c"
        if [ "$f" = quickjs ]; then
            patch_wasi "$src" > "$qobj/quickjs.c"
            [ "$(grep -c HELLO_JS_STACK_CHECK "$qobj/quickjs.c")" = 2 ] || { echo "quickjs.c: stack-check patch did not apply" >&2; exit 1; }
            src="$qobj/quickjs.c"
        fi
        "$cc" "${cflags[@]}" -DHELLO_JS_STACK_CHECK -I "$QUICKJS_DIR" -w -c "$src" -o "$qobj/$f.o.tmp"
        mv "$qobj/$f.o.tmp" "$qobj/$f.o"
    fi
done

# the script as a C array (HELLO_JS_SCRIPT: another script than script.js)
script="${HELLO_JS_SCRIPT:-$here/script.js}"
{
    echo "#include <stdint.h>"
    echo "const char hello_js_script[] = {"
    xxd -i < "$script"
    echo ", 0};"
    echo "const uint32_t hello_js_script_len = sizeof(hello_js_script) - 1;"
} > "$obj/script.c"

"$cc" "${cflags[@]}" ${HELLO_JS_CFLAGS:-} -Wall -Wextra -Werror -Wno-unused-parameter -I "$sdk" -I "$QUICKJS_DIR" -c "$here/src/hello_js.c" -o "$obj/hello_js.o"
"$cc" "${cflags[@]}" -w -c "$here/src/shim.c" -o "$obj/shim.o"
"$cc" "${cflags[@]}" -c "$obj/script.c" -o "$obj/script.o"

# The shim comes before libc.a so its definitions win and no WASI import is pulled in.
"$cc" --target=wasm32-wasi -nostdlib -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=262144 \
    -Wl,--strip-all -Wl,--gc-sections \
    "$obj/hello_js.o" "$obj/shim.o" "$obj/script.o" \
    "$qobj/quickjs.o" "$qobj/libregexp.o" "$qobj/libunicode.o" "$qobj/dtoa.o" \
    "$wasi_lib/libc.a" "$builtins" -o "$out"
