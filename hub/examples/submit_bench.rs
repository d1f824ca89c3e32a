//! Durable submits per second through the hub's store (group commit), on
//! SQLite and, with `--postgres URL`, on Postgres. Each submit returns only
//! once its transaction is committed; `CONCURRENCY` submitters share commits.
//! The baseline is the same number of single-row inserts, each committed on
//! its own (what a store without group commit would do).
//!
//! ```sh
//! cargo run --release -p relay-hub --example submit_bench -- [N] [--postgres postgres://...]
//! ```

use std::time::Instant;

use relay_core::envelope::Kind;
use relay_core::plugin::Role;
use relay_hub::store::Store;
use relay_hub::submit::NewRequest;

const CONCURRENCY: usize = 64;

fn request(i: usize) -> NewRequest {
    NewRequest {
        device: format!("d{}", i % 100),
        id: format!("r{i:08}"),
        name: "echo".into(),
        kind: Kind::Command,
        role: Role::Primary,
        payload: vec![0x81, 0xa1, b'i', 0x01],
        submitted_by: "bench".into(),
        submitted_at: 1_700_000_000_000,
        expires_at: 1_800_000_000_000,
        deadline_at: None,
    }
}

async fn concurrent(store: &Store, n: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < n {
                store.submit(request(i)).await.expect("submit");
                i += CONCURRENCY;
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn one_at_a_time(store: &Store, n: usize, offset: usize) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        store.submit(request(offset + i)).await.expect("submit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let postgres = args
        .iter()
        .position(|a| a == "--postgres")
        .and_then(|i| args.get(i + 1).cloned());
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    let mut targets = vec![("SQLite (WAL, synchronous=FULL)", sqlite)];
    if let Some(url) = postgres {
        targets.push(("Postgres (fsync on)", url));
    }
    println!(
        "| store | {CONCURRENCY} concurrent submitters | one at a time (no sharing) | ratio |"
    );
    println!("|-------|---:|---:|---:|");
    for (name, url) in targets {
        let store = Store::open(&url).await.expect("open");
        let shared = concurrent(&store, n).await;
        let single = one_at_a_time(&store, (n / 20).max(100), n).await;
        println!(
            "| {name} | {shared:.0}/s | {single:.0}/s | {:.1}x |",
            shared / single
        );
    }
}
