//! `relay plugin new NAME --lang L`: a plugin project that builds with one
//! command (`./build.sh`) and passes its generated scenario on both engines
//! (`relay test NAME.wasm scenarios`), like `extism generate plugin`.
//!
//! The project stands alone, outside this repository: a Rust project
//! carries the `wasm` profile and the small stack in its own `Cargo.toml`
//! and `.cargo/config.toml` and depends on the guest SDK by path; a project
//! in another language gets a copy of its guest kit under `relay/`, so it
//! builds with nothing but that language's compiler. The templates live in
//! `cli/templates/` (compiled into the binary); the kits are read from the
//! guest SDK directory (`--sdk`, default: this checkout's `guest-sdk`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

/// A guest language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Cpp,
    Assemblyscript,
    Zig,
}

/// Create a plugin project.
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  relay plugin new blinker --lang c && cd blinker && ./build.sh && relay test blinker.wasm scenarios")]
pub struct NewArgs {
    /// Plugin name (letters, digits, `-`, `_`; 1 to 64 characters).
    pub name: String,
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to create it [default: ./NAME].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The guest SDK directory (this repository's `guest-sdk`).
    #[arg(long, env = "RELAY_GUEST_SDK")]
    pub sdk: Option<PathBuf>,
}

/// `(path in the project, template text)`.
type Files = &'static [(&'static str, &'static str)];

const COMMON: Files = &[
    (
        "scenarios/hello.toml",
        include_str!("../../templates/common/hello.toml"),
    ),
    (
        "README.md",
        include_str!("../../templates/common/README.md"),
    ),
];

const RUST: Files = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../templates/rust/.cargo/config.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs.tmpl"),
    ),
    ("build.sh", include_str!("../../templates/rust/build.sh")),
];

impl Lang {
    fn files(self) -> Files {
        match self {
            Lang::Rust => RUST,
            Lang::C => super::new_templates::C,
            Lang::Cpp => super::new_templates::CPP,
            Lang::Assemblyscript => super::new_templates::ASSEMBLYSCRIPT,
            Lang::Zig => super::new_templates::ZIG,
        }
    }

    /// The guest kit copied into the project: `(dir under the SDK, files)`.
    fn kit(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Lang::Rust => None,
            Lang::C | Lang::Cpp => Some(("c", super::new_templates::C_KIT)),
            Lang::Assemblyscript => Some(("assemblyscript", super::new_templates::AS_KIT)),
            Lang::Zig => Some(("zig", super::new_templates::ZIG_KIT)),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Cpp => "C++",
            Lang::Assemblyscript => "AssemblyScript",
            Lang::Zig => "Zig",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::C => "src/plugin.c",
            Lang::Cpp => "src/plugin.cpp",
            Lang::Assemblyscript => "assembly/index.ts",
            Lang::Zig => "src/plugin.zig",
        }
    }
}

/// This checkout's guest SDK, when `relay` runs from it.
fn default_sdk() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
}

pub fn new(args: NewArgs) -> Result<()> {
    relay_core::name::validate_name(&args.name)
        .map_err(|e| anyhow::anyhow!("invalid plugin name {:?}: {e}", args.name))?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = args
        .sdk
        .clone()
        .or_else(default_sdk)
        .context("where is the guest SDK? give --sdk <relay checkout>/guest-sdk")?;
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("guest SDK {}", sdk.display()))?;
    let crate_name = args.name.to_lowercase();
    let vars = [
        ("{{name}}", args.name.clone()),
        ("{{crate}}", crate_name.clone()),
        ("{{crate_file}}", crate_name.replace('-', "_")),
        ("{{sdk}}", sdk.display().to_string()),
        ("{{lang}}", args.lang.label().to_string()),
        ("{{source}}", args.lang.source().to_string()),
    ];
    let fill = |text: &str| {
        vars.iter()
            .fold(text.to_string(), |t, (k, v)| t.replace(k, v))
    };
    for (path, text) in COMMON.iter().chain(args.lang.files()) {
        write(&dir.join(path), &fill(text))?;
    }
    if let Some((kit, files)) = args.lang.kit() {
        for file in files {
            let from = sdk.join(kit).join(file);
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("reading the {kit} kit: {}", from.display()))?;
            write(&dir.join("relay").join(file), &text)?;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("build.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    println!(
        "created {} ({} plugin {:?})\n\n  cd {}\n  ./build.sh {}.wasm\n  relay test {}.wasm scenarios",
        dir.display(),
        args.lang.label(),
        args.name,
        dir.display(),
        args.name,
        args.name
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
