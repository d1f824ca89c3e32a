// The {{name}} plugin (AssemblyScript). Add commands to plugin(...) below;
// `relay test` runs scenarios/ on both engines. The kit is vendored in relay/.

import {
  plugin, command, Command, Outcome, ok, error, ErrorKind, ALL_ROLES, Writer,
} from "relay-guest-as/assembly/relay";

// The ABI entry points live in the kit; asc exports only what this file exports.
export {
  describe, handle, cabi_realloc, cabi_post_describe, cabi_post_handle,
} from "relay-guest-as/assembly/relay";

/** hello {"name": string up to 32 bytes} -> {"hello": name} ("world" by default). */
function hello(cmd: Command): Outcome {
  let name = "world";
  if (cmd.payload.length > 0) {
    const r = cmd.reader();
    const v = r.get("name");
    if (v === null && !r.ok) return error(ErrorKind.InvalidArgument, "invalid payload: " + r.error);
    if (v !== null) {
      name = v.readStr();
      if (!v.ok) return error(ErrorKind.InvalidArgument, "`name` must be a string");
    }
  }
  // The limit is in UTF-8 bytes, what the wire carries.
  if (String.UTF8.byteLength(name) > 32) return error(ErrorKind.OutOfBounds, "name is longer than 32 bytes");
  return ok(new Writer().map(1).str("hello").str(name));
}

plugin("{{name}}", "0.1.0", [
  command("hello", ALL_ROLES, hello),
]);
