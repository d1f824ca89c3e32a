//! Write-through commits (`FileStorage::write_through`, `O_DIRECT |
//! O_DSYNC`): the log they leave reads back exactly like a buffered one,
//! across block boundaries, preallocation, reopen, compaction and a torn
//! tail. The files live under cargo's target tmpdir (the real disk; where
//! a filesystem refuses direct I/O the same tests cover the buffered
//! fallback).

use std::fs;
use std::path::Path;

use anyhow::Result;
use relay_core::journal::{FrameEnd, Storage};
use relay_store::{FileStorage, JOURNAL_FILE};

/// Records of mixed sizes, several of them larger than a 4 KiB block.
fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = [3, 700, 1500, 5000, 64][i % 5] + i;
            let mut r = format!("record-{i}-").into_bytes();
            r.resize(len.max(r.len()), b'a' + (i % 26) as u8);
            r
        })
        .collect()
}

fn real_disk_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?)
}

fn open_write_through(dir: &Path, preallocate: u64) -> Result<(FileStorage, bool)> {
    let mut s = FileStorage::open(dir)?;
    s.preallocate(preallocate);
    let on = s.write_through()?;
    if !on {
        eprintln!(
            "note: no direct I/O under {}; testing the fallback",
            dir.display()
        );
    }
    Ok((s, on))
}

fn append_synced(s: &mut FileStorage, batch: &[Vec<u8>]) -> Result<()> {
    for r in batch {
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

#[test]
fn batches_across_block_boundaries_replay_in_order() -> Result<()> {
    for preallocate in [0, 8192, 1 << 20] {
        let dir = real_disk_dir()?;
        let recs = records(60);
        {
            let (mut s, _) = open_write_through(dir.path(), preallocate)?;
            // Batches of 1, 2, 3, ... records: ends land anywhere in a block.
            let (mut at, mut size, mut batches) = (0, 1, 0);
            while at < recs.len() {
                let end = (at + size).min(recs.len());
                append_synced(&mut s, &recs[at..end])?;
                at = end;
                size += 1;
                batches += 1;
            }
            assert_eq!(s.sync_count(), batches, "one durable write per batch");
        }
        let (got, s) = replay(dir.path())?;
        assert_eq!(got, recs, "preallocate {preallocate}");
        assert_eq!(
            s.recovery().discarded,
            None,
            "zeros after the log are its clean end"
        );
        // Whatever follows the log on disk is zeros.
        let bytes = fs::read(dir.path().join(JOURNAL_FILE))?;
        assert!(bytes[s.len() as usize..].iter().all(|&b| b == 0));
    }
    Ok(())
}

#[test]
fn reopened_log_continues_after_its_last_record() -> Result<()> {
    let dir = real_disk_dir()?;
    let recs = records(23);
    {
        let (mut s, _) = open_write_through(dir.path(), 4096)?;
        append_synced(&mut s, &recs[..11])?;
    }
    {
        // The partial last block is read back and written again with the
        // new frames: the records before them must survive that.
        let (mut s, _) = open_write_through(dir.path(), 4096)?;
        let (got, _) = s.replay_all()?;
        assert_eq!(got, &recs[..11]);
        append_synced(&mut s, &recs[11..])?;
    }
    let (got, _) = replay(dir.path())?;
    assert_eq!(got, recs);
    Ok(())
}

#[test]
fn compaction_then_appends_replay_the_compacted_log() -> Result<()> {
    let dir = real_disk_dir()?;
    let recs = records(30);
    {
        let (mut s, _) = open_write_through(dir.path(), 8192)?;
        append_synced(&mut s, &recs[..20])?;
        let kept: Vec<&[u8]> = recs[15..20].iter().map(Vec::as_slice).collect();
        s.rewrite(&mut kept.into_iter())?;
        // Appends after the rewrite go to the new file, after its last record.
        append_synced(&mut s, &recs[20..])?;
    }
    let (got, _) = replay(dir.path())?;
    assert_eq!(got, &recs[15..]);
    Ok(())
}

#[test]
fn unsynced_appends_are_not_written_and_a_torn_tail_is_repaired() -> Result<()> {
    let dir = real_disk_dir()?;
    let path = dir.path().join(JOURNAL_FILE);
    let recs = records(8);
    let len;
    {
        let (mut s, _) = open_write_through(dir.path(), 4096)?;
        append_synced(&mut s, &recs[..6])?;
        len = s.len() as usize;
        // Never synced: lost at the "crash" (drop), like a buffered append.
        s.append(&recs[6])?;
    }
    // A crash mid-write: half of a frame's header and payload after the log.
    let mut bytes = fs::read(&path)?;
    let mut frame = Vec::new();
    relay_core::journal::encode_frame(b"half-written-record", &mut frame)?;
    bytes[len..len + 8 + 5].copy_from_slice(&frame[..8 + 5]);
    fs::write(&path, &bytes)?;
    {
        let (mut s, _) = open_write_through(dir.path(), 4096)?;
        let discarded = s.recovery().discarded.expect("torn frame reported");
        assert!(
            matches!(discarded.end, FrameEnd::Torn { .. }),
            "{discarded:?}"
        );
        let (got, _) = s.replay_all()?;
        assert_eq!(got, &recs[..6]);
        append_synced(&mut s, &recs[7..])?;
    }
    let (got, s) = replay(dir.path())?;
    assert_eq!(got, [&recs[..6], &recs[7..]].concat());
    assert_eq!(s.recovery().discarded, None);
    Ok(())
}

/// Enabling write-through tries one direct write at once (the last block
/// again, or a block of zeros when the log ends on a block boundary), so a
/// filesystem that accepts `O_DIRECT` at open but refuses the writes is
/// found before any commit depends on it. That write leaves the log intact.
#[test]
fn enabling_on_a_log_that_ends_on_a_block_boundary_keeps_it_intact() -> Result<()> {
    let dir = real_disk_dir()?;
    let path = dir.path().join(JOURNAL_FILE);
    // 16-byte header + 8-byte frame header + 4,072 bytes = one 4 KiB block.
    let first = vec![b'z'; 4096 - 16 - 8];
    {
        let mut s = FileStorage::open(dir.path())?;
        append_synced(&mut s, std::slice::from_ref(&first))?;
        assert_eq!(s.len(), 4096);
    }
    let (mut s, on) = open_write_through(dir.path(), 0)?;
    if on {
        assert_eq!(
            fs::metadata(&path)?.len(),
            8192,
            "a block of zeros after the log"
        );
    }
    append_synced(&mut s, &[b"second".to_vec()])?;
    drop(s);
    let (got, s) = replay(dir.path())?;
    assert_eq!(got, vec![first, b"second".to_vec()]);
    assert_eq!(s.recovery().discarded, None);
    Ok(())
}
