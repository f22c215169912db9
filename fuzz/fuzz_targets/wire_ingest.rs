//! What the control plane decodes from agents: event batches, then applied to a mirror as the
//! ingestion does (a decoded batch must never panic the mirror), and heartbeats.
#![no_main]

use fleetnode_state_machine::{State, mirror};
use fleetnode_wire::{AgentStatus, EventBatch, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode::<EventBatch>(data) {
        let mut state = State::default();
        for event in &batch.events {
            let before = state.clone();
            if mirror::apply(&mut state, event).is_err() {
                assert_eq!(state, before, "a refused event changed the mirror");
            }
        }
    }
    let _ = decode::<AgentStatus>(data);
});
