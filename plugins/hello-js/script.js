// hello-js: a Relay plugin written in JavaScript (run by QuickJS inside the module).
// `plugin.commands.<name>.run(payload, call)` gets the msgpack payload as a JS value
// (undefined when there is none) and returns the reply (undefined = no reply).
// A thrown RangeError is out-of-bounds, a TypeError invalid-argument, anything
// else permanent (or set `err.kind = "transient"` etc. yourself).
export const plugin = {
  name: "hello-js",
  version: "0.1.0",
  commands: {
    // The same contract as the conformance `echo` of the other languages
    // (the per-language benchmark calls it): the payload back, re-encoded.
    echo: {
      roles: ["admin", "primary", "secondary"],
      run(payload) {
        return payload;
      },
    },
    hello: {
      roles: ["admin", "primary", "secondary"],
      run(payload) {
        if (payload === null || typeof payload !== "object" || typeof payload.name !== "string")
          throw new TypeError('payload must be {"name": <string>}');
        if (payload.name.length === 0 || payload.name.length > 64)
          throw new RangeError(`name must be 1..64 characters, got ${payload.name.length}`);
        return { hello: payload.name };
      },
    },
    count: {
      roles: ["admin", "primary"],
      budgetMs: 500,
      run(payload) {
        const n = (relay.kv.get("count") ?? 0) + 1;
        relay.kv.set("count", n);
        relay.emit("counted", { n });
        relay.log("info", `count is now ${n}`);
        return { count: n };
      },
    },
    fail: {
      roles: ["admin"],
      run(payload) {
        throw new Error("this always fails");
      },
    },
  },
};
