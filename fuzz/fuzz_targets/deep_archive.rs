//! Fuzz target: see `shmport::fuzzing::deep_archive`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmport::fuzzing::deep_archive(data));
