//! The persistent plugin kv: survives reopen once flushed, never half-written,
//! damage is a typed error at open, and HostEnv's quota holds after a reload.

use std::fs;

use anyhow::Result;
use relay_core::host_env::{FixedClock, HostEnv, KvStore, MemLogger};
use relay_core::limits::Limits;
use relay_core::plugin::KvError;
use relay_store::{FileKv, KvStoreError};

#[test]
fn flushed_writes_survive_reopen_unflushed_do_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut kv = FileKv::open(dir.path(), "counter")?;
    kv.put("n", b"1");
    kv.put("gone", b"x");
    kv.delete("gone");
    kv.try_flush()?;
    kv.put("n", b"2"); // never flushed: the "crash" case
    drop(kv);
    let kv = FileKv::open(dir.path(), "counter")?;
    assert_eq!(kv.get("n"), Some(b"1".to_vec()));
    assert_eq!(kv.entries(), vec![("n".to_string(), b"1".to_vec())]);
    assert!(kv.path().ends_with("kv/counter.kv"));
    Ok(())
}

#[test]
fn flush_writes_only_when_dirty() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut kv = FileKv::open(dir.path(), "p")?;
    kv.flush().unwrap();
    assert_eq!(kv.flush_count(), 0);
    kv.put("k", b"v");
    assert!(kv.is_dirty());
    kv.flush().unwrap();
    kv.put("k", b"v"); // same value: not a change
    kv.flush().unwrap();
    assert_eq!(kv.flush_count(), 1);
    Ok(())
}

#[test]
fn namespaces_are_separate_and_removable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut a = FileKv::open(dir.path(), "a")?;
    a.put("k", b"a");
    a.try_flush()?;
    let b = FileKv::open(dir.path(), "b")?;
    assert_eq!(b.get("k"), None);
    assert!(FileKv::remove(dir.path(), "a")?);
    assert!(!FileKv::remove(dir.path(), "a")?);
    assert_eq!(FileKv::open(dir.path(), "a")?.get("k"), None);
    Ok(())
}

#[test]
fn bad_plugin_names_cannot_escape_the_kv_dir() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../etc", "a/b", "", "x.kv"] {
        assert!(
            matches!(
                FileKv::open(dir.path(), bad),
                Err(KvStoreError::InvalidPlugin(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn corrupt_snapshot_is_a_typed_error_and_leftover_tmp_is_ignored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut kv = FileKv::open(dir.path(), "p")?;
    kv.put("key", b"value");
    kv.try_flush()?;
    let path = kv.path().to_path_buf();
    drop(kv);

    // A crash mid-flush leaves a partial tmp beside the whole snapshot.
    let tmp = path.with_extension("kv.tmp");
    fs::write(&tmp, b"RLYKVST\npartial")?;
    let kv = FileKv::open(dir.path(), "p")?;
    assert_eq!(kv.get("key"), Some(b"value".to_vec()));
    assert!(!tmp.exists());
    drop(kv);

    let good = fs::read(&path)?;
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        fs::write(&path, &bad)?;
        assert!(
            matches!(
                FileKv::open(dir.path(), "p"),
                Err(KvStoreError::Corrupt { .. })
            ),
            "flip at {i}"
        );
    }
    fs::write(&path, &good[..good.len() / 2])?;
    assert!(matches!(
        FileKv::open(dir.path(), "p"),
        Err(KvStoreError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn quota_still_holds_after_reload() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = Limits {
        max_kv_key_bytes: 8,
        max_kv_value_bytes: 32,
        max_kv_total_bytes: 40,
        ..Limits::default()
    };
    let env = |kv: FileKv| {
        HostEnv::new(
            "p",
            Box::new(kv),
            Box::new(FixedClock(0)),
            Box::new(MemLogger::default()),
            &limits,
        )
    };
    let mut e = env(FileKv::open(dir.path(), "p")?);
    e.kv_set("a", &[1; 30])?;
    e.flush().unwrap();
    drop(e);

    let mut e = env(FileKv::open(dir.path(), "p")?);
    assert_eq!(e.kv_used_bytes(), 31);
    assert_eq!(e.kv_set("b", &[2; 9]), Err(KvError::QuotaExceeded));
    e.kv_set("b", &[2; 8])?;
    assert_eq!(e.kv_get("a"), Some(vec![1; 30]));
    Ok(())
}
