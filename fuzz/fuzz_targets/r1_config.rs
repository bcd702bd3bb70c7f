#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| biomedgpt_fuzz::r1_config(data));
