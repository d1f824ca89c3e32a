//! Bundle regions and the record slot on a [`RamFlash`]: a transfer in
//! chunks of odd lengths reads back byte for byte, survives reopening, and
//! a power cut at **every** write and erase of a transfer (and of a record
//! update) leaves either what was durable before or the step done, never a
//! mix; the transfer then resumes and completes.

use alloc::vec::Vec;

use relay_core::ota::chunk::{receive, Chunk, Progress, Staging};
use relay_core::ota::verify::BundleRead;

use super::bundle::BundleRegion;
use super::ram::RamFlash;
use super::record::RecordSlot;

/// 4-byte writes, 256-byte sectors; a 4 KiB region.
type Flash = RamFlash<4, 256>;
const REGION: u32 = 4096;

fn bundle(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn chunks(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    // Lengths not multiples of the write size.
    let mut out = Vec::new();
    let mut at = 0;
    for n in [1usize, 7, 300, 5, 401, 999].iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + n).min(bytes.len());
        out.push((at as u64, &bytes[at..end]));
        at = end;
    }
    out
}

const TRANSFER: [u8; 32] = [7; 32];

fn send(
    region: &mut BundleRegion,
    flash: &mut Flash,
    at: u64,
    data: &[u8],
    total: u64,
) -> Result<Progress, relay_core::ota::Refusal> {
    let chunk = Chunk {
        transfer: TRANSFER,
        offset: at,
        total,
        data,
    };
    receive(&mut region.with(flash), &chunk, 1 << 20)
}

fn read_back(region: &mut BundleRegion, flash: &mut Flash) -> Vec<u8> {
    let mut on = region.with(flash);
    let mut out = alloc::vec![0u8; on.len() as usize];
    on.read_at(0, &mut out).expect("reads");
    out
}

#[test]
fn a_transfer_reads_back_and_survives_reopening() {
    let bytes = bundle(2500);
    let mut flash = Flash::new(REGION as usize * 2);
    let mut region = BundleRegion::open(&mut flash, REGION, REGION).unwrap();
    assert_eq!(region.transfer(), None);
    let parts = chunks(&bytes);
    for (k, (at, data)) in parts.iter().enumerate() {
        let progress = send(&mut region, &mut flash, *at, data, bytes.len() as u64).unwrap();
        assert_eq!(
            matches!(progress, Progress::Complete { .. }),
            k == parts.len() - 1
        );
        // A redelivery of the same chunk changes nothing.
        send(&mut region, &mut flash, *at, data, bytes.len() as u64).unwrap();
    }
    assert_eq!(read_back(&mut region, &mut flash), bytes);
    let mut again = BundleRegion::open(&mut flash, REGION, REGION).unwrap();
    assert_eq!(again, region);
    assert_eq!(read_back(&mut again, &mut flash), bytes);
    // Unaligned reads in the middle.
    let mut part = [0u8; 333];
    again.with(&mut flash).read_at(1001, &mut part).unwrap();
    assert_eq!(part[..], bytes[1001..1334]);
    // A new transfer at offset 0 replaces it; a region too small says so.
    let other = [9u8; 32];
    again.with(&mut flash).start(&other).unwrap();
    assert_eq!(again.stored(), 0);
    let big = bundle(5000);
    let err = again.with(&mut flash).write(0, &big).unwrap_err();
    assert!(err.contains("region is full"), "{err}");
}

#[test]
fn a_power_cut_at_every_operation_loses_no_finished_chunk() {
    let bytes = bundle(1200);
    let parts = chunks(&bytes);
    let total = bytes.len() as u64;
    // Operations of an uncut run.
    let mut flash = Flash::new(REGION as usize);
    let mut region = BundleRegion::open(&mut flash, 0, REGION).unwrap();
    for (at, data) in &parts {
        send(&mut region, &mut flash, *at, data, total).unwrap();
    }
    let ops = flash.ops();
    for cut in 1..=ops {
        let mut flash = Flash::new(REGION as usize);
        let mut region = BundleRegion::open(&mut flash, 0, REGION).unwrap();
        flash.cut_after(cut);
        let mut finished = 0u64;
        for (at, data) in &parts {
            if send(&mut region, &mut flash, *at, data, total).is_err() {
                break;
            }
            finished = at + data.len();
        }
        flash.power_on();
        let mut region = BundleRegion::open(&mut flash, 0, REGION).unwrap();
        let stored = region.stored();
        assert!(
            stored >= finished,
            "cut {cut}: {stored} < {finished} finished"
        );
        assert_eq!(
            read_back(&mut region, &mut flash),
            bytes[..stored as usize],
            "cut {cut}"
        );
        // The sender resumes: from where it stopped if the region still
        // holds the transfer, from 0 otherwise.
        let resume = if region.transfer().is_some() {
            finished
        } else {
            0
        };
        for (at, data) in parts.iter().filter(|(at, d)| at + d.len() > resume) {
            send(&mut region, &mut flash, *at, data, total)
                .unwrap_or_else(|e| panic!("cut {cut}: resuming at {at}: {e}"));
        }
        assert_eq!(read_back(&mut region, &mut flash), bytes, "cut {cut}");
    }
}

#[test]
fn a_record_is_the_old_or_the_new_one_after_any_cut() {
    let mut flash = Flash::new(512);
    let (mut slot, none) = RecordSlot::open(&mut flash, 0).unwrap();
    assert_eq!(none, None);
    slot.store(&mut flash, b"first").unwrap();
    slot.store(&mut flash, b"second, longer").unwrap();
    let (_, got) = RecordSlot::open(&mut flash, 0).unwrap();
    assert_eq!(got.as_deref(), Some(&b"second, longer"[..]));
    let before = flash.ops();
    slot.store(&mut flash, b"third").unwrap();
    let ops = flash.ops() - before;
    for cut in 1..=ops {
        let mut flash = Flash::new(512);
        let (mut slot, _) = RecordSlot::open(&mut flash, 0).unwrap();
        slot.store(&mut flash, b"first").unwrap();
        slot.store(&mut flash, b"second, longer").unwrap();
        flash.cut_after(cut);
        assert!(slot.store(&mut flash, b"third").is_err(), "cut {cut}");
        flash.power_on();
        let (mut slot, got) = RecordSlot::open(&mut flash, 0).unwrap();
        assert_eq!(got.as_deref(), Some(&b"second, longer"[..]), "cut {cut}");
        slot.store(&mut flash, b"fourth").unwrap();
        let (_, got) = RecordSlot::open(&mut flash, 0).unwrap();
        assert_eq!(got.as_deref(), Some(&b"fourth"[..]), "cut {cut}");
    }
    let big = alloc::vec![0u8; 300];
    assert!(slot.store(&mut flash, &big).is_err());
}
