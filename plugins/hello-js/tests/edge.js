// Edge cases of the msgpack<->JS bridge and error mapping (see edge.toml).
export const plugin = {
  name: "hello-js-edge", version: "0.0.1",
  commands: {
    echo: { run(p) { return p; } },
    none: { run() {} },
    recurse: { run() { const f = (n) => f(n + 1) + 1; return f(0); } },
    hog: { run() { const a = []; for (;;) a.push(new ArrayBuffer(1 << 20)); } },
    spin: { run() { for (;;) {} } },
    later: { async run(p) { await null; return { later: p }; } },
    reject: { async run() { throw new RangeError("async range"); } },
    date: { run(p, call) { return { now: new Date(relay.now()), call, bytes: new Uint8Array([1, 2, 3]) }; } },
    kind: { run() { const e = new Error("try again"); e.kind = "transient"; throw e; } },
    cyc: { run() { const o = {}; o.o = o; return o; } },
  },
};
