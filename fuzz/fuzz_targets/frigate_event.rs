#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| capdec_edge::fuzzing::frigate_event(bytes));
