use std::path::Path;

use proptest::prelude::*;
use sluice_testkit::TempDir;

use super::*;

fn options(dir: &Path, segment_size: u64) -> WalOptions {
    WalOptions {
        dir: dir.join("wal"),
        segment_size,
        sync: SyncPolicy::Never,
    }
}

fn payload(index: u32) -> Vec<u8> {
    let mut bytes = index.to_le_bytes().to_vec();
    bytes.resize(20 + (index as usize % 13), index as u8);
    bytes
}

fn replayed(options: &WalOptions) -> (Wal, Replay, Vec<Vec<u8>>) {
    let mut seen = Vec::new();
    let (wal, replay) = Wal::open(options.clone(), |record| seen.push(record.to_vec())).unwrap();
    (wal, replay, seen)
}

#[test]
fn records_replay_in_order_across_segments() {
    let dir = TempDir::new("wal").unwrap();
    let options = options(dir.path(), 256);
    let (wal, replay, seen) = replayed(&options);
    assert_eq!((replay.records, seen.len()), (0, 0));
    for index in 0..100 {
        wal.append(&payload(index)).unwrap();
    }
    drop(wal);
    let (_wal, replay, seen) = replayed(&options);
    assert_eq!(seen, (0..100).map(payload).collect::<Vec<_>>());
    assert!(replay.segments > 5, "{replay:?}");
    assert_eq!(replay.corruptions, 0);
}

#[test]
fn a_torn_tail_is_cut_and_writing_goes_on() {
    let dir = TempDir::new("wal").unwrap();
    let options = options(dir.path(), 1 << 20);
    let (wal, _, _) = replayed(&options);
    for index in 0..10 {
        wal.append(&payload(index)).unwrap();
    }
    drop(wal);
    let segment = options.dir.join(segment_name(1));
    let length = std::fs::metadata(&segment).unwrap().len();
    // Half of the last record reached the disk.
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(length - 10).unwrap();
    drop(file);
    let (wal, replay, seen) = replayed(&options);
    assert_eq!(seen, (0..9).map(payload).collect::<Vec<_>>());
    assert_eq!(replay.corruptions, 1);
    assert_eq!(
        replay.dropped_bytes,
        (HEADER + payload(9).len() - 10) as u64
    );
    wal.append(&payload(42)).unwrap();
    drop(wal);
    let (_wal, replay, seen) = replayed(&options);
    assert_eq!(seen.last(), Some(&payload(42)));
    assert_eq!((seen.len(), replay.corruptions), (10, 0));
}

#[test]
fn a_bad_crc_drops_the_rest_of_the_log() {
    let dir = TempDir::new("wal").unwrap();
    let options = options(dir.path(), 200);
    let (wal, _, _) = replayed(&options);
    for index in 0..40 {
        wal.append(&payload(index)).unwrap();
    }
    drop(wal);
    let before = segments(&options.dir).unwrap();
    assert!(before.len() >= 4);
    let second = options.dir.join(segment_name(before[1]));
    let mut bytes = std::fs::read(&second).unwrap();
    bytes[HEADER + 2] ^= 0x40;
    std::fs::write(&second, &bytes).unwrap();
    let (_wal, replay, seen) = replayed(&options);
    let first_segment_records = frames(&std::fs::read(options.dir.join(segment_name(1))).unwrap())
        .0
        .len();
    assert_eq!(seen.len(), first_segment_records);
    assert_eq!(replay.corruptions, 1);
    assert_eq!(segments(&options.dir).unwrap(), vec![before[0], before[1]]);
    assert_eq!(std::fs::metadata(&second).unwrap().len(), 0);
}

#[test]
fn truncation_removes_older_segments() {
    let dir = TempDir::new("wal").unwrap();
    let options = options(dir.path(), 1 << 20);
    let (wal, _, _) = replayed(&options);
    wal.append(&payload(1)).unwrap();
    let second = wal.cut().unwrap();
    assert_eq!(second, 2);
    assert_eq!(wal.cut().unwrap(), 2, "an empty segment is not cut again");
    wal.append(&payload(2)).unwrap();
    assert_eq!(wal.truncate_before(second).unwrap(), 1);
    drop(wal);
    let (_wal, _, seen) = replayed(&options);
    assert_eq!(seen, vec![payload(2)]);
}

#[test]
fn always_sync_acknowledges_after_fsync() {
    let dir = TempDir::new("wal").unwrap();
    let mut options = options(dir.path(), 1 << 20);
    options.sync = SyncPolicy::Always;
    let (wal, _, _) = replayed(&options);
    let wal = std::sync::Arc::new(wal);
    let writers: Vec<_> = (0..4)
        .map(|thread| {
            let wal = std::sync::Arc::clone(&wal);
            std::thread::spawn(move || {
                for index in 0..25 {
                    wal.append(&payload(thread * 100 + index)).unwrap();
                }
            })
        })
        .collect();
    writers
        .into_iter()
        .for_each(|writer| writer.join().unwrap());
    assert_eq!(*wal.synced.lock().unwrap(), 100);
    drop(wal);
    let (_wal, replay, _) = replayed(&options);
    assert_eq!(replay.records, 100);
}

#[test]
fn empty_and_oversized_records_are_refused() {
    let dir = TempDir::new("wal").unwrap();
    let (wal, _, _) = replayed(&options(dir.path(), 64));
    assert!(matches!(wal.append(&[]), Err(WalError::TooLarge(0))));
    assert!(matches!(
        wal.append(&[1; 100]),
        Err(WalError::TooLarge(100))
    ));
}

fn arbitrary_entry() -> impl Strategy<Value = Entry> {
    let labels = prop::collection::vec(("[a-z_]{1,8}", "\\PC{0,8}"), 0..4);
    (
        "[a-z0-9-]{0,12}",
        prop::collection::vec((any::<u64>(), labels), 0..4),
        prop::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..20),
    )
        .prop_map(|(tenant, series, samples)| Entry {
            tenant,
            series,
            samples: samples
                .into_iter()
                .map(|(reference, t, bits)| (reference, t, f64::from_bits(bits)))
                .collect(),
        })
}

fn same(left: &Entry, right: &Entry) -> bool {
    left.tenant == right.tenant
        && left.series == right.series
        && left.samples.len() == right.samples.len()
        && left
            .samples
            .iter()
            .zip(&right.samples)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2.to_bits() == b.2.to_bits())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

    #[test]
    fn entries_round_trip(entry in arbitrary_entry()) {
        let decoded = Entry::decode(&entry.encode()).unwrap();
        prop_assert!(same(&decoded, &entry));
    }

    #[test]
    fn mutated_entries_and_frames_never_panic(
        entry in arbitrary_entry(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = entry.encode();
        for (index, byte) in flips {
            let position = index.index(bytes.len());
            bytes[position] ^= byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = Entry::decode(&bytes);
        let (records, good) = frames(&bytes);
        prop_assert!(good <= bytes.len());
        prop_assert!(records.iter().all(|record| !record.is_empty()));
    }
}

#[test]
fn a_checkpoint_replaces_old_segments_and_replays_first() {
    let dir = TempDir::new("wal").unwrap();
    let options = options(dir.path(), 1 << 20);
    let (wal, _, _) = replayed(&options);
    for index in 0..5 {
        wal.append(&payload(index)).unwrap();
    }
    let first_kept = wal.cut().unwrap();
    wal.append(&payload(5)).unwrap();
    let mut old = Vec::new();
    wal.read_before(first_kept, |record| old.push(record.to_vec()))
        .unwrap();
    assert_eq!(old, (0..5).map(payload).collect::<Vec<_>>());
    // Keep only what is still needed of the old records.
    wal.checkpoint(first_kept, &[payload(3), payload(4)])
        .unwrap();
    assert_eq!(segments(&options.dir).unwrap(), vec![first_kept]);
    let second = wal.cut().unwrap();
    wal.append(&payload(6)).unwrap();
    let mut older = Vec::new();
    wal.read_before(second, |record| older.push(record.to_vec()))
        .unwrap();
    assert_eq!(older, vec![payload(3), payload(4), payload(5)]);
    wal.checkpoint(second, &[payload(5)]).unwrap();
    drop(wal);
    let (wal, _, seen) = replayed(&options);
    assert_eq!(seen, vec![payload(5), payload(6)]);
    assert_eq!(
        checkpoint::checkpoints(&options.dir).unwrap(),
        vec![second - 1]
    );
    wal.append(&payload(7)).unwrap();
    drop(wal);
    assert_eq!(replayed(&options).2.last(), Some(&payload(7)));
}
