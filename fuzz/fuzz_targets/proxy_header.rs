//! The control plane's PROXY protocol v2 parser, on the bytes a trusted load balancer's
//! connection begins with: never a panic, never a header longer than the bytes or than the
//! bound, the same answer from the prefix-then-payload reads the listener makes as from the
//! whole buffer, and a header cut short always incomplete.
#![no_main]

use fleetnode_control_plane::server::listen::proxy_header::{
    HeaderError, MAX_PAYLOAD_LEN, PREFIX_LEN, parse, parse_payload, payload_len,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Some(prefix) = data.first_chunk::<PREFIX_LEN>() {
        // The listener's way: the prefix, then exactly the length it announces.
        let stepwise = payload_len(prefix).and_then(|len| {
            let payload =
                data.get(PREFIX_LEN..PREFIX_LEN + len)
                    .ok_or(HeaderError::Incomplete {
                        needed: PREFIX_LEN + len,
                    })?;
            parse_payload(prefix, payload).map(|header| (header, PREFIX_LEN + len))
        });
        assert_eq!(whole, stepwise);
    }
    if let Ok((header, used)) = whole {
        assert!(used >= PREFIX_LEN && used <= data.len());
        assert!(used - PREFIX_LEN <= MAX_PAYLOAD_LEN);
        assert_eq!(parse(&data[..used]), Ok((header, used)));
        assert!(matches!(
            parse(&data[..used - 1]),
            Err(HeaderError::Incomplete { .. })
        ));
    }
});
