//! A small line diff for mismatch reports.
//!
//! Role in the data path: the very end, where a human reads why a step
//! failed. Expected and actual values are pretty-printed JSON; an LCS over
//! their lines shows what changed as `-` (expected) / `+` (actual) lines with
//! a little context. Values in reports are small (one reply, one kv store),
//! and inputs beyond [`MAX_LINES`] fall back to printing both sides whole, so
//! the quadratic table stays bounded.

use serde_json::Value as Json;

/// Lines per side above which no LCS is computed.
pub const MAX_LINES: usize = 2_000;
/// Unchanged lines kept around each change.
const CONTEXT: usize = 3;

/// Renders `expected` vs `actual` as diff lines (`- `, `+ `, `  `, `  ...`).
/// Short values are shown on one line each.
pub fn json_diff(expected: &Json, actual: &Json) -> Vec<String> {
    let (e, a) = (expected.to_string(), actual.to_string());
    if e.len() <= 72 && a.len() <= 72 {
        return vec![format!("- {e}"), format!("+ {a}")];
    }
    let pretty = |v: &Json| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    line_diff(&pretty(expected), &pretty(actual))
}

/// A line diff of two texts with [`CONTEXT`] lines of context.
pub fn line_diff(expected: &str, actual: &str) -> Vec<String> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    if old.len() > MAX_LINES || new.len() > MAX_LINES {
        let minus = old.iter().map(|l| format!("- {l}"));
        return minus.chain(new.iter().map(|l| format!("+ {l}"))).collect();
    }
    let ops = lcs_ops(&old, &new);
    let keep: Vec<bool> = (0..ops.len())
        .map(|i| {
            let lo = i.saturating_sub(CONTEXT);
            let hi = (i + CONTEXT + 1).min(ops.len());
            ops[lo..hi].iter().any(|op| !matches!(op, Op::Same(_)))
        })
        .collect();
    let mut out = Vec::new();
    let mut skipped = false;
    for (op, keep) in ops.iter().zip(keep) {
        if !keep {
            if !skipped {
                out.push("  ...".to_string());
            }
            skipped = true;
            continue;
        }
        skipped = false;
        out.push(match op {
            Op::Same(l) => format!("  {l}"),
            Op::Removed(l) => format!("- {l}"),
            Op::Added(l) => format!("+ {l}"),
        });
    }
    out
}

enum Op<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

fn lcs_ops<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Op<'a>> {
    let (n, m) = (old.len(), new.len());
    // table[i][j] = LCS length of old[i..] and new[j..]
    let mut table = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i][j] = if old[i] == new[j] {
                table[i + 1][j + 1] + 1
            } else {
                table[i + 1][j].max(table[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut ops) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            ops.push(Op::Same(old[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || table[i + 1][j] >= table[i][j + 1]) {
            ops.push(Op::Removed(old[i]));
            i += 1;
        } else {
            ops.push(Op::Added(new[j]));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_values_fit_on_one_line() {
        assert_eq!(
            json_diff(&json!({"value": 42}), &json!({"value": 41})),
            ["- {\"value\":42}", "+ {\"value\":41}"]
        );
    }

    #[test]
    fn long_values_show_changed_lines_with_context() {
        let e: Json = (0..20)
            .map(|i| (format!("key{i:02}"), json!(i)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        let mut a = e.clone();
        a["key10"] = json!(99);
        let lines = json_diff(&e, &a);
        assert!(
            lines.contains(&"-   \"key10\": 10,".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"+   \"key10\": 99,".to_string()),
            "{lines:#?}"
        );
        assert!(lines.contains(&"  ...".to_string()));
        assert!(lines.len() < 15);
    }
}
