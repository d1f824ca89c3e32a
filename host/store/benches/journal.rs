//! Journal benchmark: durable (fsynced) appends per second, one by one versus
//! group commit with 64 concurrent submitters, on the real disk.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-store cargo bench -p relay-store --bench journal
//! ```
//!
//! Shows why the runtime writes through [`Journal`]: one fsync per command
//! caps throughput at the disk's fsync rate (~3,800/s here), while commands
//! that arrive during an fsync share the next one. Env knobs:
//! `RELAY_BENCH_DIR` (default: cargo's target tmpdir, which is on the disk
//! under test; never point it at a tmpfs), `RELAY_BENCH_RECORDS` (one-by-one
//! count, default 2000; the group run does 8x that).
//! Without `--bench` (e.g. `cargo test --benches`) it runs a tiny smoke pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use relay_core::journal::Storage;
use relay_store::{FileStorage, Journal};

const RECORD_LEN: usize = 256;
const SUBMITTERS: usize = 64;

fn record(i: usize) -> Vec<u8> {
    let mut r = format!("{i:016}").into_bytes();
    r.resize(RECORD_LEN, b'.');
    r
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Run {
    name: &'static str,
    records: usize,
    syncs: u64,
    secs: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }

    fn print(&self) {
        println!(
            "{:<34} {:>7} records {:>7} fsyncs {:>9.0} records/s {:>6.1} records/fsync",
            self.name,
            self.records,
            self.syncs,
            self.rate(),
            self.records as f64 / self.syncs.max(1) as f64
        );
    }
}

/// How the journal file is opened.
#[derive(Clone, Copy)]
enum Mode {
    /// Buffered appends to a growing file, `fdatasync` per commit.
    Plain,
    /// As the runtime opens it: 1 MiB of zeros written ahead and
    /// write-through commits (`O_DIRECT | O_DSYNC`) where the disk allows.
    Runtime,
}

/// Append + commit per record, on the calling thread: the floor.
fn one_by_one(root: &Path, n: usize, mode: Mode) -> Run {
    let (dir, name) = match mode {
        Mode::Plain => ("one-by-one", "one-by-one (FileStorage)"),
        Mode::Runtime => ("one-by-one-rt", "one-by-one (prealloc+write-through)"),
    };
    let mut s = FileStorage::open(fresh_dir(root, dir)).expect("open");
    if let Mode::Runtime = mode {
        s.preallocate(1 << 20);
        if !s.write_through().expect("write-through") {
            println!("(no direct I/O on this filesystem: buffered + fdatasync)");
        }
    }
    let start = Instant::now();
    for i in 0..n {
        s.append(&record(i)).expect("append");
        s.sync().expect("sync");
    }
    let secs = start.elapsed().as_secs_f64();
    Run {
        name,
        records: n,
        syncs: s.sync_count(),
        secs,
    }
}

/// One submitter awaiting each ticket: the journal thread's overhead alone.
fn journal_sequential(rt: &tokio::runtime::Runtime, root: &Path, n: usize) -> Run {
    let journal = Journal::spawn(FileStorage::open(fresh_dir(root, "sequential")).expect("open"))
        .expect("spawn");
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            journal.append_one(record(i)).await.expect("durable");
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let syncs = journal.stats().syncs;
    Run {
        name: "1 submitter (Journal)",
        records: n,
        syncs,
        secs,
    }
}

/// 64 tasks, each submitting and awaiting its records one at a time, the
/// way concurrent commands arrive at the runtime.
fn journal_concurrent(rt: &tokio::runtime::Runtime, root: &Path, n: usize) -> Run {
    let journal = Arc::new(
        Journal::spawn(FileStorage::open(fresh_dir(root, "group")).expect("open")).expect("spawn"),
    );
    let per_task = n / SUBMITTERS;
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        journal
                            .append_one(record(t * per_task + i))
                            .await
                            .expect("durable");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let syncs = journal.stats().syncs;
    Run {
        name: "64 submitters (Journal, group)",
        records: per_task * SUBMITTERS,
        syncs,
        secs,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let root = std::env::var_os("RELAY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-bench"));
    let n: usize = std::env::var("RELAY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2000 } else { 64 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "journal bench: {RECORD_LEN}-byte records, dir {}",
        root.display()
    );
    let single = one_by_one(&root, n, Mode::Plain);
    single.print();
    let runtime_mode = one_by_one(&root, n, Mode::Runtime);
    runtime_mode.print();
    let seq = journal_sequential(&rt, &root, n);
    seq.print();
    let group = journal_concurrent(&rt, &root, n * 8);
    group.print();
    println!(
        "prealloc+write-through / plain, one by one: {:.2}x records/s",
        runtime_mode.rate() / single.rate()
    );
    println!(
        "group commit / one-by-one: {:.1}x records/s ({} fsyncs for {} records)",
        group.rate() / single.rate(),
        group.syncs,
        group.records
    );
    let _ = std::fs::remove_dir_all(&root);
}
