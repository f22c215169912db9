//! What the control plane decodes from operators: every admin request body, and the release
//! manifest `fleetnode-cp rollout` reads.
#![no_main]

use fleetnode_wire::{
    AddHost, AddOperator, ReleaseManifest, RollbackRequest, SetTarget, StartRollout, decode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<AddHost>(data);
    let _ = decode::<SetTarget>(data);
    let _ = decode::<RollbackRequest>(data);
    let _ = decode::<StartRollout>(data);
    let _ = decode::<AddOperator>(data);
    let _ = serde_json::from_slice::<ReleaseManifest>(data);
});
