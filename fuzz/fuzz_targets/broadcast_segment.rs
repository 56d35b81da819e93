//! Fuzz target: see `shmport::fuzzing::broadcast_segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmport::fuzzing::broadcast_segment(data));
