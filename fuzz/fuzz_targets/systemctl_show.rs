//! `systemctl show` output: the parse of its lines and what the properties say about a unit.
#![no_main]

use fleetnode_agent::system::show;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(properties) = show::parse(&text) {
        let _ = show::view(&properties);
    }
});
