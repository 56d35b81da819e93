//! Fuzz target: see `shmport::fuzzing::transfer_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmport::fuzzing::transfer_record(data));
