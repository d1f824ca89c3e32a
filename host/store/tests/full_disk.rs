//! The journal on a full disk (`relay_store::space`): an append the disk
//! refuses is rolled back, not fatal; the writer keeps the refused records in
//! order and writes them first on `retry`, so the log never gets a hole; the
//! reserve takes appends once the disk gives no more, and comes back when
//! space does; a journal reopened on a full disk opens and replays, even
//! when its corrupt tail cannot be copied aside.
//!
//! The real-filesystem test mounts a small tmpfs, which needs root and a
//! kernel that lets the test mount; where it cannot, it says so and skips
//! (the injected `MemStorage` tests cover the same logic everywhere).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use relay_core::journal::{MemStorage, Storage};
use relay_store::{FileStorage, Journal, JournalError, SharedStorage};

type Mem = SharedStorage<MemStorage>;

fn replayed(mem: &Mem) -> Vec<Vec<u8>> {
    let mut image = mem.lock().clone();
    image.crash();
    image.replay_all().unwrap().0
}

#[test]
fn refused_appends_are_kept_in_order_and_written_first_by_retry() -> Result<()> {
    let mem = Mem::default();
    let journal = Journal::spawn(mem.clone())?;
    journal.append_one(b"a".to_vec()).wait_blocking()?;
    let used = mem.lock().log().len();
    mem.lock().set_capacity(Some(used + 4), 0);
    let full = journal.append_one(b"b-too-big".to_vec()).wait_blocking();
    assert!(matches!(&full, Err(e) if e.is_no_space()), "{full:?}");
    // Later appends are refused (kept), even one that would fit.
    let later = journal.append_one(b"c".to_vec()).wait_blocking();
    assert!(matches!(&later, Err(e) if e.is_no_space()), "{later:?}");
    assert_eq!(replayed(&mem), [b"a".to_vec()]);
    // Still full: the retry fails and keeps everything.
    let again = journal.retry(vec![b"d".to_vec()]).wait_blocking();
    assert!(matches!(&again, Err(e) if e.is_no_space()), "{again:?}");
    // Space returned: the refused records first, in order, then the new one.
    mem.lock().set_capacity(None, 0);
    journal.retry(vec![b"e".to_vec()]).wait_blocking()?;
    journal.append_one(b"f".to_vec()).wait_blocking()?;
    let want: Vec<Vec<u8>> = ["a", "b-too-big", "c", "d", "e", "f"]
        .iter()
        .map(|r| r.as_bytes().to_vec())
        .collect();
    assert_eq!(replayed(&mem), want);
    journal.close()?;
    Ok(())
}

#[test]
fn the_reserve_takes_appends_once_full_and_a_probe_restores_it() -> Result<()> {
    let mem = Mem::default();
    let journal = Journal::spawn(mem.clone())?;
    journal.append_one(b"a".to_vec()).wait_blocking()?;
    let used = mem.lock().log().len();
    mem.lock().set_capacity(Some(used + 100), 90);
    journal.append_one(b"outcome".to_vec()).wait_blocking()?;
    assert!(journal.reserve_in_use(), "written into the reserve");
    journal.probe().wait_blocking()?;
    assert!(journal.reserve_in_use(), "the disk is still full");
    mem.lock().set_capacity(Some(used + 1000), 90);
    journal.probe().wait_blocking()?;
    assert!(!journal.reserve_in_use(), "space returned");
    // Anything else than a full disk stays fatal.
    mem.lock().set_failing(true);
    let failed = journal.append_one(b"x".to_vec()).wait_blocking();
    assert!(
        matches!(failed, Err(JournalError::Storage(_))),
        "{failed:?}"
    );
    Ok(())
}

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root and mount rights)");
            return None;
        }
        Some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![1u8; 4096];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn open(dir: &Path, direct: bool) -> Result<FileStorage> {
    let mut storage = FileStorage::open(dir)?;
    storage.preallocate(64 << 10);
    storage.reserve(64 << 10);
    if direct {
        storage.write_through()?;
    }
    Ok(storage)
}

#[test]
fn a_real_full_disk_uses_the_reserve_refuses_without_poisoning_and_reopens() -> Result<()> {
    real_full_disk(false)
}

#[test]
fn a_real_full_disk_with_write_through_commits() -> Result<()> {
    real_full_disk(true)
}

fn real_full_disk(direct: bool) -> Result<()> {
    let Some(fs) = SmallFs::mount("2m") else {
        return Ok(());
    };
    let open = |dir: &Path| open(dir, direct);
    let dir = fs.path().join("data");
    let mut storage = open(&dir)?;
    let record = vec![7u8; 1000];
    storage.append(&record)?;
    storage.sync()?;
    let filler = fs.fill();
    // The disk is full: appends go into the reserve, then are refused.
    let mut synced = 1;
    let refused = loop {
        storage.append(&record)?;
        match storage.sync() {
            Ok(()) => synced += 1,
            Err(e) => break e,
        }
        assert!(synced < 1000, "never filled up");
    };
    assert!(refused.is_no_space(), "{refused}");
    assert!(storage.reserve_in_use());
    assert!(synced > 10, "the reserve took appends: {synced}");
    // Not poisoned: a restore on a still-full disk is no error.
    storage.restore_reserve()?;
    assert!(storage.reserve_in_use());
    // Reopened on the full disk (as `relay run` after a restart): it opens
    // and replays everything that was synced.
    drop(storage);
    let mut storage = open(&dir)?;
    assert_eq!(storage.replay_all()?.0.len(), synced);
    // Space returns: the reserve is whole again and appends go on.
    std::fs::remove_file(filler)?;
    storage.restore_reserve()?;
    assert!(!storage.reserve_in_use());
    storage.append(&record)?;
    storage.sync()?;
    drop(storage);
    assert_eq!(open(&dir)?.replay_all()?.0.len(), synced + 1);
    Ok(())
}

#[test]
fn a_corrupt_tail_on_a_full_disk_is_dropped_without_a_copy_and_the_journal_opens() -> Result<()> {
    let Some(fs) = SmallFs::mount("1m") else {
        return Ok(());
    };
    let dir = fs.path().join("data");
    let recs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    {
        let mut storage = FileStorage::open(&dir)?;
        for r in &recs {
            storage.append(r)?;
        }
        storage.sync()?;
    }
    // Damage the 4th record, then fill the disk.
    let path = dir.join(relay_store::JOURNAL_FILE);
    let mut bytes = std::fs::read(&path)?;
    let offset = 16 + 3 * (8 + 100) + 8;
    bytes[offset] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    fs.fill();
    let mut storage = FileStorage::open(&dir).expect("opens on a full disk");
    assert!(storage
        .recovery()
        .discarded
        .is_some_and(|d| d.is_corruption()));
    assert_eq!(storage.recovery().preserved, None, "no room for the copy");
    assert_eq!(storage.replay_all()?.0, recs[..3]);
    Ok(())
}
