//! `sitesteer_config::parse` on arbitrary text: it refuses or accepts, never panics, and
//! every refusal says what is wrong.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sitesteer_config::parse(text, "fuzz", Path::new("/nonexistent")) {
        Ok(config) => {
            assert!(
                !config.sites.is_empty(),
                "a config without sites was accepted"
            );
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "refused without an error");
            for e in &errors.errors {
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            }
            let _ = errors.to_string();
        }
    }
});
