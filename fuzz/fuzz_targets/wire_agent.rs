//! What the agent decodes from the control plane: every answer body and the protocol header.
#![no_main]

use fleetnode_wire::{DesiredAnswer, ErrorBody, EventAck, HeartbeatAck, check_version, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<DesiredAnswer>(data);
    let _ = decode::<EventAck>(data);
    let _ = decode::<HeartbeatAck>(data);
    let _ = decode::<ErrorBody>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_version(Some(text));
    }
});
