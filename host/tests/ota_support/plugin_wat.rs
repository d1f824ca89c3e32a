//! Plugins made to order for the update tests: a core module under our
//! canonical ABI (the layout of `host/tests/fixtures/hostile/*.wat`) whose
//! `describe()` reports the given name, version and commands, and whose
//! behaviour is chosen per version: echo the payload, trap, or fail its
//! `self-test`. A version is a different module (different bytes, hash),
//! as a real new release would be.

/// How a generated plugin behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Every command echoes its payload (`ok(none)` when empty); a
    /// `self-test` succeeds.
    Echo,
    /// Every command except `self-test` traps (`unreachable`).
    Traps,
    /// `self-test` fails with a permanent error; the rest echo.
    FailsSelfTest,
}

/// The WAT text of plugin `name` `version` with `commands` (all roles).
/// `self-test`, when wanted, must be one of `commands`.
pub fn plugin_wat(name: &str, version: &str, commands: &[&str], behaviour: Behaviour) -> String {
    // Strings from 1024, command specs from 512, plugin-info at 64, the
    // three roles at 48, the return area at 128, the heap from 8192.
    let mut strings = String::new();
    let mut at = 1024usize;
    let mut place = |s: &str| {
        let p = at;
        strings.push_str(s);
        at += s.len();
        (p, s.len())
    };
    let (name_p, name_l) = place(name);
    let (ver_p, ver_l) = place(version);
    let specs: Vec<(usize, usize)> = commands.iter().map(|c| place(c)).collect();
    let le = |v: usize| -> String {
        (v as u32)
            .to_le_bytes()
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect()
    };
    let info = [name_p, name_l, ver_p, ver_l, 512, commands.len()]
        .map(le)
        .concat();
    let mut spec_data = String::new();
    for (p, l) in &specs {
        spec_data += &[*p, *l, 48, 3, 0, 0].map(le).concat();
    }
    let escaped: String = strings.bytes().map(|b| format!("\\{b:02x}")).collect();
    let on_command = match behaviour {
        Behaviour::Traps => "unreachable",
        _ => "(return (call $echo (local.get $p) (local.get $p_len)))",
    };
    let on_self_test = match behaviour {
        Behaviour::FailsSelfTest => "(return (call $fail))",
        _ => "(return (call $echo (i32.const 0) (i32.const 0)))",
    };
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (block $fits
      (br_if $fits (i32.le_u (local.get $end) (i32.shl (memory.size) (i32.const 16))))
      (br_if $fits (i32.ne (i32.const -1) (memory.grow (i32.add (i32.const 1)
        (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16))) (i32.const 16))))))
      unreachable)
    (global.set $heap (local.get $end))
    (local.get $p))
  (data (i32.const 48) "\00\01\02")
  (data (i32.const 64) "{info}")
  (data (i32.const 512) "{spec_data}")
  (data (i32.const 1024) "{escaped}")
  (data (i32.const 4000) "self-test failed")
  (func (export "describe") (result i32) (i32.const 64))
  (func (export "cabi_post_describe") (param i32))
  (func (export "cabi_post_handle") (param i32) (global.set $heap (i32.const 8192)))
  (func $echo (param $p i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store8 (i32.const 132) (i32.ne (local.get $len) (i32.const 0)))
    (i32.store (i32.const 136) (local.get $p))
    (i32.store (i32.const 140) (local.get $len))
    (i32.const 128))
  (func $fail (result i32)
    (i32.store8 (i32.const 128) (i32.const 1))
    (i32.store8 (i32.const 132) (i32.const 3))
    (i32.store (i32.const 136) (i32.const 4000))
    (i32.store (i32.const 140) (i32.const 16))
    (i32.const 128))
  (func (export "handle") (param $id i32) (param $id_len i32) (param $name i32) (param $name_len i32)
        (param $p i32) (param $p_len i32) (param $attempt i32) (param $role i32) (result i32)
    (if (i32.and (i32.eq (local.get $name_len) (i32.const 9))
                 (i32.eq (i32.load8_u (local.get $name)) (i32.const 115)))
      (then {on_self_test}))
    {on_command})
)"#
    )
}

/// The module bytes of [`plugin_wat`].
pub fn plugin_module(
    name: &str,
    version: &str,
    commands: &[&str],
    behaviour: Behaviour,
) -> Vec<u8> {
    wat::parse_str(plugin_wat(name, version, commands, behaviour)).expect("generated WAT parses")
}
