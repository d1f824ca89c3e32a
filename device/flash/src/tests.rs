//! The log on a [`RamFlash`]: records survive reopening and compaction,
//! space runs out cleanly, and a power cut at **every** write and erase of
//! a run (and at every one of the recovery after it) loses no synced
//! record, never yields a record out of order, and leaves a log that takes
//! new records.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use relay_core::journal::Storage;

use super::ram::RamFlash;
use super::{FlashLog, FlashLogError};

/// ESP32-like geometry, small sectors to keep the runs short: 4-byte
/// writes, 256-byte sectors, two halves of 4 sectors.
type Flash = RamFlash<4, 256>;
const LEN: u32 = 2048;
const RESERVE: u32 = 128;

fn open(flash: Flash) -> FlashLog<Flash> {
    FlashLog::open(flash, 0, LEN, RESERVE).expect("opens")
}

fn replayed(log: &mut FlashLog<Flash>) -> Vec<Vec<u8>> {
    log.replay_all().expect("replays").0
}

fn reopen(log: FlashLog<Flash>) -> FlashLog<Flash> {
    let mut flash = log.into_flash();
    flash.power_on();
    open(flash)
}

fn record(i: usize) -> Vec<u8> {
    // Lengths vary so units and padding vary.
    format!("record-{i}-{}", "x".repeat(i % 7)).into_bytes()
}

#[test]
fn synced_records_survive_a_reopen_in_order_and_unsynced_ones_do_not() {
    let mut log = open(Flash::new(LEN as usize));
    assert!(replayed(&mut log).is_empty());
    for i in 0..5 {
        log.append(&record(i)).unwrap();
    }
    log.sync().unwrap();
    log.append(&record(5)).unwrap();
    let mut log = reopen(log);
    assert_eq!(replayed(&mut log), (0..5).map(record).collect::<Vec<_>>());
    log.append(&record(6)).unwrap();
    log.sync().unwrap();
    let mut log = reopen(log);
    let want: Vec<_> = [0, 1, 2, 3, 4, 6].into_iter().map(record).collect();
    assert_eq!(replayed(&mut log), want);
}

#[test]
fn a_rewrite_replaces_the_log_and_alternates_halves() {
    let mut log = open(Flash::new(LEN as usize));
    replayed(&mut log);
    for i in 0..20 {
        log.append(&record(i)).unwrap();
        log.sync().unwrap();
    }
    let keep: Vec<Vec<u8>> = (15..20).map(record).collect();
    for round in 0..3 {
        log.rewrite(&mut keep.iter().map(Vec::as_slice)).unwrap();
        let mut reopened = reopen(log);
        assert_eq!(replayed(&mut reopened), keep, "round {round}");
        log = reopened;
    }
    assert_eq!(log.stats().compactions, 0, "stats are per open");
    assert!(!log.wants_compaction());
}

#[test]
fn a_full_half_refuses_the_sync_keeps_what_was_durable_and_takes_records_after_compaction() {
    let mut log = open(Flash::new(LEN as usize));
    replayed(&mut log);
    let mut durable = Vec::new();
    let mut saw_reserve = false;
    let mut i = 0;
    let refused = loop {
        log.append(&record(i)).unwrap();
        match log.sync() {
            Ok(()) => durable.push(record(i)),
            Err(e) => break e,
        }
        saw_reserve |= log.reserve_in_use();
        assert!(i < 1000, "never filled");
        i += 1;
    };
    assert!(log.is_no_space(&refused), "{refused}");
    assert!(saw_reserve, "the reserve was used before the log was full");
    assert!(log.wants_compaction());
    let mut reopened = reopen(log);
    assert_eq!(replayed(&mut reopened), durable);
    let last: Vec<Vec<u8>> = durable[durable.len() - 2..].to_vec();
    reopened
        .rewrite(&mut last.iter().map(Vec::as_slice))
        .unwrap();
    assert!(!reopened.reserve_in_use());
    reopened.append(b"after").unwrap();
    reopened.sync().unwrap();
    let mut again = reopen(reopened);
    let mut want = last;
    want.push(b"after".to_vec());
    assert_eq!(replayed(&mut again), want);
}

#[test]
fn bad_partitions_are_refused() {
    let bad = |base, len| {
        matches!(
            FlashLog::open(Flash::new(4096), base, len, 0),
            Err(FlashLogError::Layout(_))
        )
    };
    assert!(bad(0, 256), "one sector: no two halves");
    assert!(bad(100, 512), "unaligned base");
    assert!(bad(2048, 4096), "past the end");
    assert!(!bad(1024, 512));
}

/// One step of the power-cut workload.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    Sync,
    Rewrite(Vec<Vec<u8>>),
}

fn workload() -> Vec<Op> {
    let mut ops = Vec::new();
    let mut n = 0;
    for round in 0..3 {
        for batch in 0..6 {
            for _ in 0..(batch % 3 + 1) {
                ops.push(Op::Append(record(n)));
                n += 1;
            }
            ops.push(Op::Sync);
        }
        // Keep the last three records, as a compaction keeps live ones.
        let keep = (n - 3..n).map(record).collect();
        ops.push(Op::Rewrite(keep));
        if round == 1 {
            ops.push(Op::Append(record(n)));
            n += 1;
            ops.push(Op::Sync);
        }
    }
    ops
}

/// What the log may hold after a cut: the records known durable, and what
/// the operation in progress may have added (a sync: any prefix of its
/// records; a rewrite: exactly its records instead).
struct Expect {
    durable: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
}

impl Expect {
    fn allows(&self, got: &[Vec<u8>], cut_in: Option<&Op>) -> bool {
        if let Some(Op::Rewrite(new)) = cut_in {
            return got == self.durable.as_slice() || got == new.as_slice();
        }
        got.len() >= self.durable.len()
            && got.len() <= self.durable.len() + self.pending.len()
            && got[..self.durable.len()] == self.durable[..]
            && got[self.durable.len()..] == self.pending[..got.len() - self.durable.len()]
    }
}

/// Runs `ops` on `log` until one fails; returns the model and the failed op.
fn run(log: &mut FlashLog<Flash>, ops: &[Op]) -> (Expect, Option<Op>) {
    let mut e = Expect {
        durable: Vec::new(),
        pending: Vec::new(),
    };
    for op in ops {
        let result = match op {
            Op::Append(r) => {
                e.pending.push(r.clone());
                log.append(r)
            }
            Op::Sync => log.sync().map(|()| e.durable.append(&mut e.pending)),
            Op::Rewrite(new) => log.rewrite(&mut new.iter().map(Vec::as_slice)).map(|()| {
                e.durable = new.clone();
                e.pending.clear();
            }),
        };
        if result.is_err() {
            return (e, Some(op.clone()));
        }
    }
    (e, None)
}

/// After a reboot (with the power cut again at the `cut`-th write or
/// erase, if any): the log replays `before`, takes a record, and has it
/// after the next reboot (or, if the cut stopped that sync, may not).
fn recover_and_append(
    mut flash: Flash,
    before: &[Vec<u8>],
    cut: Option<u64>,
) -> (Flash, Vec<Vec<u8>>) {
    flash.power_on();
    if let Some(c) = cut {
        flash.cut_after(c);
    }
    let mut log = open(flash);
    assert_eq!(replayed(&mut log), before, "a second replay agrees");
    log.append(b"after").unwrap();
    let synced = log.sync();
    assert!(
        synced.is_ok() || cut.is_some(),
        "no power cut, yet: {synced:?}"
    );
    let synced = synced.is_ok();
    let mut log = reopen(log);
    let got = replayed(&mut log);
    let mut with = before.to_vec();
    with.push(b"after".to_vec());
    if synced {
        assert_eq!(got, with);
    } else {
        assert!(got == before || got == with, "{got:?}");
    }
    (log.into_flash(), got)
}

#[test]
fn a_power_cut_at_every_write_and_erase_loses_no_synced_record() {
    let ops = workload();
    // A run without a cut: how many flash operations it takes, formatting
    // the empty flash included.
    let mut full = open(Flash::new(LEN as usize));
    replayed(&mut full);
    let (_, failed) = run(&mut full, &ops);
    assert!(failed.is_none());
    let total = full.into_flash().ops();
    assert!(total > 50, "the workload exercises the flash ({total} ops)");

    let mut recoveries = 0;
    for cut in 1..=total {
        let mut flash = Flash::new(LEN as usize);
        flash.cut_after(cut);
        let Ok(mut log) = FlashLog::open(flash, 0, LEN, RESERVE) else {
            continue; // cut while formatting an empty flash: nothing to lose
        };
        replayed(&mut log);
        let (expect, cut_in) = run(&mut log, &ops);
        assert!(cut_in.is_some(), "cut {cut} of {total} hit no operation");
        let mut rebooted = reopen(log);
        let got = replayed(&mut rebooted);
        assert!(
            expect.allows(&got, cut_in.as_ref()),
            "cut {cut} during {cut_in:?}: replayed {} records, durable {}, pending {}",
            got.len(),
            expect.durable.len(),
            expect.pending.len()
        );
        // The recovery (a move past a torn unit, then the next unit) is cut
        // at each of its writes too, and must recover again after that.
        let state = rebooted.into_flash();
        for second in 1..=10 {
            let (after_cut, got) = recover_and_append(state.clone(), &got, Some(second));
            recover_and_append(after_cut, &got, None);
            recoveries += 1;
        }
    }
    assert!(recoveries > 0);
}

#[test]
fn a_damaged_unit_ends_the_log_and_the_next_write_moves_past_it() {
    let mut log = open(Flash::new(LEN as usize));
    replayed(&mut log);
    for i in 0..3 {
        log.append(&record(i)).unwrap();
        log.sync().unwrap();
    }
    let flash = log.into_flash();
    // Flip a bit in the second unit's frames.
    let mut bytes = flash.bytes().to_vec();
    // The log header, then the first unit: its header and its frame padded.
    let second_unit = 16 + 8 + (8 + record(0).len()).div_ceil(4) * 4;
    bytes[second_unit + 8 + 10] ^= 0x01;
    let mut log = open(Flash::from_image(bytes));
    let (got, report) = log.replay_all().unwrap();
    assert_eq!(got, vec![record(0)]);
    assert!(report.discarded.is_some());
    log.append(b"after").unwrap();
    log.sync().unwrap();
    assert_eq!(log.stats().moves, 1);
    let mut log = reopen(log);
    assert_eq!(replayed(&mut log), vec![record(0), b"after".to_vec()]);
}
