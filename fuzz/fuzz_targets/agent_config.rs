//! The agent's configuration parser: TOML text to a validated `Config`, or an error naming the
//! key.
#![no_main]

use fleetnode_agent::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(ConfigError::Invalid { key, .. }) = Config::parse(text) {
        assert!(!key.is_empty(), "an invalid value must name its key");
    }
});
