//! Crash behaviour of the journal file: whatever a crash leaves on disk
//! (unsynced appends dropped, the file cut at any byte, bytes flipped, a
//! compaction interrupted), reopening replays exactly a prefix of what was
//! written and never a damaged record.

use std::fs::{self, OpenOptions};
use std::path::Path;

use anyhow::Result;
use proptest::prelude::*;
use relay_core::journal::{FrameEnd, Storage};
use relay_store::{FileStorage, StoreError, JOURNAL_FILE};

const HEADER_LEN: u64 = 16;

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("record-{i}-{}", "x".repeat(i % 37)).into_bytes())
        .collect()
}

fn write_synced(dir: &Path, recs: &[Vec<u8>]) -> Result<()> {
    let mut s = FileStorage::open(dir)?;
    for r in recs {
        s.append(r)?;
    }
    s.sync()?;
    Ok(())
}

fn replay(dir: &Path) -> Result<(Vec<Vec<u8>>, FileStorage)> {
    let mut s = FileStorage::open(dir)?;
    let (recs, _) = s.replay_all()?;
    Ok((recs, s))
}

fn assert_prefix(got: &[Vec<u8>], written: &[Vec<u8>]) {
    assert!(
        got.len() <= written.len(),
        "{} records replayed, {} written",
        got.len(),
        written.len()
    );
    assert_eq!(got, &written[..got.len()]);
}

#[test]
fn synced_records_survive_reopen_and_appends_continue() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(50);
    write_synced(dir.path(), &recs[..30])?;
    let (got, mut s) = replay(dir.path())?;
    assert_eq!(got, recs[..30]);
    for r in &recs[30..] {
        s.append(r)?;
    }
    s.sync()?;
    assert_eq!(s.sync_count(), 1);
    drop(s);
    assert_eq!(replay(dir.path())?.0, recs);
    Ok(())
}

#[test]
fn dropping_without_sync_loses_at_most_the_unsynced_tail() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(20);
    let mut s = FileStorage::open(dir.path())?;
    for r in &recs[..10] {
        s.append(r)?;
    }
    s.sync()?;
    for r in &recs[10..] {
        s.append(r)?; // buffered, never synced: the "process killed" case
    }
    drop(s);
    let (got, _) = replay(dir.path())?;
    assert_eq!(got, recs[..10]);
    Ok(())
}

#[test]
fn truncation_at_every_byte_replays_a_prefix_and_repairs_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(12);
    write_synced(dir.path(), &recs)?;
    let path = dir.path().join(JOURNAL_FILE);
    let full = fs::read(&path)?;
    for cut in HEADER_LEN as usize..=full.len() {
        fs::write(&path, &full[..cut])?;
        let (got, mut s) = replay(dir.path())?;
        assert_prefix(&got, &recs);
        // The torn tail is gone from disk, so a new append is replayable.
        s.append(b"after-crash")?;
        s.sync()?;
        drop(s);
        let (again, _) = replay(dir.path())?;
        assert_eq!(again.len(), got.len() + 1, "cut at {cut}");
        assert_eq!(
            again.last().map(Vec::as_slice),
            Some(b"after-crash".as_slice())
        );
    }
    Ok(())
}

#[test]
fn corrupt_middle_frame_stops_replay_and_keeps_a_copy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(10);
    write_synced(dir.path(), &recs)?;
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = fs::read(&path)?;
    // Flip one payload byte of the 4th record.
    let offset: usize = recs[..3].iter().map(|r| 8 + r.len()).sum();
    bytes[HEADER_LEN as usize + offset + 8] ^= 0x40;
    fs::write(&path, &bytes)?;

    let mut s = FileStorage::open(dir.path())?;
    let recovery = s.recovery().clone();
    let discarded = recovery.discarded.expect("corruption reported");
    assert!(discarded.is_corruption());
    assert_eq!(discarded.end.offset(), Some(offset));
    let copy = recovery.preserved.expect("corrupt tail preserved");
    assert_eq!(fs::read(copy)?, bytes[HEADER_LEN as usize + offset..]);
    // Reported on replay too, so the runtime can log it.
    let (got, report) = s.replay_all()?;
    assert_eq!(got, recs[..3]);
    assert_eq!(report.discarded, Some(discarded));
    drop(s);
    // The repair is on disk: the next open finds a clean log.
    let (got, s) = replay(dir.path())?;
    assert_eq!(got, recs[..3]);
    assert_eq!(s.recovery().discarded, None);
    Ok(())
}

#[test]
fn torn_tail_is_reported_as_torn() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(3);
    write_synced(dir.path(), &recs)?;
    let path = dir.path().join(JOURNAL_FILE);
    let len = fs::metadata(&path)?.len();
    OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(len - 2)?;
    let s = FileStorage::open(dir.path())?;
    let d = s.recovery().discarded.expect("torn tail reported");
    assert!(matches!(d.end, FrameEnd::Torn { .. }));
    assert!(s.recovery().preserved.is_none());
    Ok(())
}

#[test]
fn rewrite_is_atomic_and_a_leftover_tmp_is_ignored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let recs = records(8);
    write_synced(dir.path(), &recs)?;
    // A crash mid-compaction leaves a partial tmp file beside the intact log.
    let tmp = dir.path().join(format!("{JOURNAL_FILE}.tmp"));
    fs::write(&tmp, b"RLYJRNL\n garbage")?;
    let (got, mut s) = replay(dir.path())?;
    assert_eq!(got, recs);
    assert!(s.recovery().removed_tmp);
    assert!(!tmp.exists());

    let kept = [b"compacted".to_vec(), recs[7].clone()];
    s.append(b"unsynced, superseded by the rewrite")?;
    s.rewrite(&mut kept.iter().map(Vec::as_slice))?;
    s.append(b"after")?;
    s.sync()?;
    drop(s);
    let (got, _) = replay(dir.path())?;
    assert_eq!(got, [kept[0].clone(), kept[1].clone(), b"after".to_vec()]);
    Ok(())
}

#[test]
fn foreign_or_future_files_are_typed_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(JOURNAL_FILE);
    fs::write(&path, b"not a journal at all")?;
    assert!(matches!(
        FileStorage::open(dir.path()),
        Err(StoreError::BadHeader { .. })
    ));
    fs::write(&path, b"RLYJRNL\n\x09\0\0\0\0\0\0\0")?;
    assert!(matches!(
        FileStorage::open(dir.path()),
        Err(StoreError::UnsupportedVersion { found: 9, .. })
    ));
    fs::write(&path, b"RLYJ")?;
    assert!(matches!(
        FileStorage::open(dir.path()),
        Err(StoreError::BadHeader { .. })
    ));
    // An empty file (not created by us) is adopted.
    fs::write(&path, b"")?;
    let (got, s) = replay(dir.path())?;
    assert!(got.is_empty() && s.is_empty());
    Ok(())
}

#[test]
fn invalid_records_are_refused_without_writing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = FileStorage::open(dir.path())?;
    assert!(matches!(s.append(b""), Err(StoreError::Frame(_))));
    s.append(b"ok")?;
    s.sync()?;
    drop(s);
    assert_eq!(replay(dir.path())?.0, vec![b"ok".to_vec()]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random crash images: synced part, unsynced part written but cut at a
    /// random byte, then random bytes flipped anywhere after the header.
    #[test]
    fn crash_images_replay_a_prefix(
        n in 1usize..40,
        synced in 0usize..40,
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(n);
        let synced = synced.min(n);
        {
            let mut s = FileStorage::open(dir.path()).unwrap();
            for r in &recs[..synced] { s.append(r).unwrap(); }
            s.sync().unwrap();
            // Written to the file (as a crash mid-batch could leave it), then cut.
            for r in &recs[synced..] { s.append(r).unwrap(); }
            s.sync().unwrap();
        }
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let synced_len = HEADER_LEN as usize + recs[..synced].iter().map(|r| 8 + r.len()).sum::<usize>();
        let cut = synced_len + cut.index(bytes.len() - synced_len + 1);
        bytes.truncate(cut);
        for (at, bit) in &flips {
            if bytes.len() > HEADER_LEN as usize {
                let i = HEADER_LEN as usize + at.index(bytes.len() - HEADER_LEN as usize);
                bytes[i] ^= 1 << bit;
            }
        }
        fs::write(&path, &bytes).unwrap();
        let (got, _) = replay(dir.path()).unwrap();
        prop_assert!(got.len() <= recs.len());
        prop_assert_eq!(&got[..], &recs[..got.len()]);
        if flips.is_empty() {
            prop_assert!(got.len() >= synced);
        }
    }
}

/// Opens with 4 KiB of zeros written ahead (the runtime uses 1 MiB).
fn open_preallocated(dir: &Path) -> Result<FileStorage> {
    let mut s = FileStorage::open(dir)?;
    s.preallocate(4096);
    Ok(s)
}

#[test]
fn preallocated_log_replays_grows_and_reopens_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(JOURNAL_FILE);
    let recs = records(300); // ~12 KiB: grows the file several times
    {
        let mut s = open_preallocated(dir.path())?;
        for chunk in recs.chunks(7) {
            for r in chunk {
                s.append(r)?;
            }
            s.sync()?;
            // Zeros ahead of the log: the file is longer than the log.
            assert!(fs::metadata(&path)?.len() > s.len());
        }
    }
    let on_disk = fs::read(&path)?;
    let mut s = open_preallocated(dir.path())?;
    // The zero tail is the clean end, not a torn or corrupt frame.
    assert_eq!(s.recovery().discarded, None);
    let (got, _) = s.replay_all()?;
    assert_eq!(got, recs);
    // Appends go after the last record (over the zeros), not after the zeros.
    s.append(b"after-reopen")?;
    s.sync()?;
    assert_eq!(fs::metadata(&path)?.len(), on_disk.len() as u64);
    drop(s);
    let (got, s) = replay(dir.path())?;
    assert_eq!(got.len(), recs.len() + 1);
    assert_eq!(
        got.last().map(Vec::as_slice),
        Some(b"after-reopen".as_slice())
    );
    assert_eq!(s.recovery().discarded, None);
    Ok(())
}

#[test]
fn frame_torn_inside_preallocated_zeros_is_torn_and_repaired() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(JOURNAL_FILE);
    let recs = records(5);
    {
        let mut s = open_preallocated(dir.path())?;
        for r in &recs {
            s.append(r)?;
        }
        s.sync()?;
    }
    let mut bytes = fs::read(&path)?;
    let end = HEADER_LEN as usize + recs.iter().map(|r| 8 + r.len()).sum::<usize>();
    let total = bytes.len();
    // A crash mid-write: the next frame's header and half its payload made it.
    let mut frame = Vec::new();
    relay_core::journal::encode_frame(b"half-written-record", &mut frame)?;
    bytes[end..end + 8 + 5].copy_from_slice(&frame[..8 + 5]);
    fs::write(&path, &bytes)?;
    let mut s = open_preallocated(dir.path())?;
    let discarded = s.recovery().discarded.expect("torn frame reported");
    assert!(
        matches!(discarded.end, FrameEnd::Torn { .. }),
        "{discarded:?}"
    );
    assert_eq!(discarded.bytes, 8 + 5);
    assert!(s.recovery().preserved.is_none());
    assert!(
        fs::metadata(&path)?.len() < total as u64,
        "cut back to the log"
    );
    let (got, _) = s.replay_all()?;
    assert_eq!(got, recs);
    s.append(b"next")?;
    s.sync()?;
    drop(s);
    let (got, _) = replay(dir.path())?;
    assert_eq!(got.len(), recs.len() + 1);
    Ok(())
}

#[test]
fn rewrite_of_a_preallocated_log_then_appends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = open_preallocated(dir.path())?;
    for r in records(20) {
        s.append(&r)?;
    }
    s.sync()?;
    s.rewrite(&mut [b"snapshot".as_slice()].into_iter())?;
    s.append(b"after")?;
    s.sync()?;
    drop(s);
    let (got, s) = replay(dir.path())?;
    assert_eq!(got, vec![b"snapshot".to_vec(), b"after".to_vec()]);
    assert_eq!(s.recovery().discarded, None);
    Ok(())
}
