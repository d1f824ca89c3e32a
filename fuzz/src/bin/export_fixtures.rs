//! Turns fuzzer inputs into plugin modules for the regression test:
//! `export-fixtures <input files...> <out dir>` writes `<name>.wasm` for
//! every input that makes a plugin (see `host/tests/fuzz_regressions.rs`).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.pop() else {
        eprintln!("usage: export-fixtures <input files...> <out dir>");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&out)?;
    let mut written = 0;
    for input in &args {
        let data = std::fs::read(input)?;
        if let Ok(wasm) = relay_fuzz::plugin(&data) {
            let name = Path::new(input)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::write(Path::new(&out).join(format!("{name}.wasm")), wasm)?;
            written += 1;
        }
    }
    println!("{written} fixtures written to {out}");
    Ok(())
}
