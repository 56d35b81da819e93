//! Fuzz target: see `shmport::fuzzing::ring_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmport::fuzzing::ring_records(data));
