#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| capdec_edge::fuzzing::mjpeg_stream(bytes));
