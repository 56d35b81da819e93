//! Replays the committed fuzz corpora (fuzz/corpus/<target>/*) through the fuzz entry
//! points, so every input the fuzzers kept stays a regression test without nightly Rust.
//! Run with `RUSTFLAGS="--cfg fuzzing" cargo test --release -p shmport --test fuzz_corpus`
//! (cargo-fuzz sets the same cfg).
#![cfg(fuzzing)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}

#[test]
fn the_ring_records_corpus_decodes_without_panicking() {
    replay("ring_records", shmport::fuzzing::ring_records);
}

#[test]
fn the_segment_header_corpus_opens_without_panicking() {
    replay("segment_header", shmport::fuzzing::segment_header);
}

#[test]
fn the_transfer_record_corpus_parses_without_panicking() {
    replay("transfer_record", shmport::fuzzing::transfer_record);
}

#[test]
fn the_deep_archive_corpus_decodes_without_overflowing() {
    replay("deep_archive", shmport::fuzzing::deep_archive);
}

#[test]
fn the_broadcast_segment_corpus_opens_and_reads_without_panicking() {
    replay("broadcast_segment", shmport::fuzzing::broadcast_segment);
}
