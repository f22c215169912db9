//! `nix path-info --json --recursive` output (Nix 2.8's array and newer Nix's object), parsed
//! into the paths, hashes and signatures the signature check uses.
#![no_main]

use fleetnode_agent::system::path_info;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(infos) = path_info::parse(text) {
        let _ = path_info::by_path(&infos);
        for info in &infos {
            let _ = path_info::nix32_encode(&info.nar_hash);
        }
    }
});
