//! Fuzz target: see `shmport::fuzzing::segment_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmport::fuzzing::segment_header(data));
