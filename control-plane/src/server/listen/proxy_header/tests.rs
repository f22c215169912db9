//! The header as HAProxy writes it, every refusal, and properties over arbitrary input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::{HeaderError, MAX_PAYLOAD_LEN, PREFIX_LEN, ProxyHeader, SIGNATURE, parse};

/// A header written by hand from the specification: signature, version/command byte,
/// family/transport byte, big-endian length, then `payload`.
fn header(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = SIGNATURE.to_vec();
    bytes.push(version_command);
    bytes.push(family);
    bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The TCP-over-IPv4 address block: source, destination, source port, destination port.
fn ipv4_block(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (source.ip(), destination.ip()) else {
        panic!("IPv4 addresses expected");
    };
    let mut block = s.octets().to_vec();
    block.extend_from_slice(&d.octets());
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block
}

fn ipv6_block(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (source.ip(), destination.ip()) else {
        panic!("IPv6 addresses expected");
    };
    let mut block = s.octets().to_vec();
    block.extend_from_slice(&d.octets());
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(value);
    bytes
}

fn v4(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn a_forwarded_ipv4_client_and_nothing_past_the_header_is_taken() {
    // What HAProxy's send-proxy-v2 writes for a client 127.0.0.9:40000 that reached its
    // frontend at 127.0.0.1:8443, followed here by the start of a TLS ClientHello.
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    bytes.extend_from_slice(&[127, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x20, 0xfb]);
    bytes.extend_from_slice(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    let (parsed, used) = parse(&bytes).unwrap();
    assert_eq!(
        parsed,
        ProxyHeader::Proxied {
            source: v4("127.0.0.9:40000"),
            destination: v4("127.0.0.1:8443"),
        }
    );
    assert_eq!(used, 28);
    assert_eq!(bytes[used], 0x16, "the TLS record is left where it was");
}

#[test]
fn a_forwarded_ipv6_client() {
    let source = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7)),
        51000,
    );
    let destination = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 443);
    let bytes = header(0x21, 0x21, &ipv6_block(source, destination));
    assert_eq!(
        parse(&bytes).unwrap(),
        (
            ProxyHeader::Proxied {
                source,
                destination
            },
            16 + 36
        )
    );
}

#[test]
fn local_is_the_balancers_own_connection_and_its_block_is_skipped() {
    // HAProxy's health checks: LOCAL, family unspecified, no block.
    assert_eq!(
        parse(&header(0x20, 0x00, &[])).unwrap(),
        (ProxyHeader::Local, 16)
    );
    // A LOCAL header may still carry a block; it is skipped unread.
    let block = ipv4_block(v4("10.0.0.1:1"), v4("10.0.0.2:2"));
    assert_eq!(
        parse(&header(0x20, 0x11, &block)).unwrap(),
        (ProxyHeader::Local, 28)
    );
    assert_eq!(
        parse(&header(0x20, 0x7f, b"junk")).unwrap(),
        (ProxyHeader::Local, 20)
    );
}

#[test]
fn tlvs_after_the_addresses_must_fill_the_header_exactly() {
    let block = ipv4_block(v4("192.0.2.1:1000"), v4("192.0.2.2:443"));
    let mut payload = block.clone();
    payload.extend(tlv(0x01, b"http/1.1"));
    payload.extend(tlv(0x04, &[0; 5]));
    payload.extend(tlv(0x05, &[]));
    let (parsed, used) = parse(&header(0x21, 0x11, &payload)).unwrap();
    assert!(matches!(parsed, ProxyHeader::Proxied { .. }));
    assert_eq!(used, 16 + payload.len());

    let mut cut = block.clone();
    cut.extend_from_slice(&[0x01, 0x00]);
    assert_eq!(
        parse(&header(0x21, 0x11, &cut)),
        Err(HeaderError::Tlv {
            offset: 12,
            len: 14
        })
    );
    let mut long = block.clone();
    long.extend(tlv(0x01, b"h2"));
    long.extend_from_slice(&[0x02, 0x00, 0x09, b'x']);
    assert_eq!(
        parse(&header(0x21, 0x11, &long)),
        Err(HeaderError::Tlv {
            offset: 17,
            len: 21
        })
    );
}

#[test]
fn what_is_not_a_version_2_header_is_refused_saying_what_it_is() {
    let block = ipv4_block(v4("192.0.2.1:1000"), v4("192.0.2.2:443"));
    let cases: Vec<(Vec<u8>, HeaderError)> = vec![
        (
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 443\r\n".to_vec(),
            HeaderError::VersionOne,
        ),
        (b"PROXY ".to_vec(), HeaderError::VersionOne),
        (
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0,
            ],
            HeaderError::NoSignature,
        ),
        (b"GET / HTTP/1.1\r\n".to_vec(), HeaderError::NoSignature),
        (vec![0x16], HeaderError::NoSignature),
        (header(0x11, 0x11, &block), HeaderError::Version(1)),
        (header(0x31, 0x11, &block), HeaderError::Version(3)),
        (header(0x22, 0x11, &block), HeaderError::Command(2)),
        (header(0x2f, 0x11, &block), HeaderError::Command(15)),
        (header(0x21, 0x00, &[]), HeaderError::Family(0x00)),
        (header(0x21, 0x12, &block), HeaderError::Family(0x12)),
        (header(0x21, 0x31, &[0; 216]), HeaderError::Family(0x31)),
        (
            header(0x21, 0x11, &block[..8]),
            HeaderError::ShortAddresses { len: 8, needed: 12 },
        ),
        (
            header(0x21, 0x21, &block),
            HeaderError::ShortAddresses {
                len: 12,
                needed: 36,
            },
        ),
        (
            header(0x20, 0x00, &vec![0; MAX_PAYLOAD_LEN + 1]),
            HeaderError::TooLong {
                len: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN,
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(parse(&bytes), Err(expected.clone()), "{bytes:02x?}");
        assert!(!expected.to_string().is_empty());
    }
    // The bound itself is accepted.
    let longest = header(0x20, 0x00, &vec![0; MAX_PAYLOAD_LEN]);
    assert_eq!(
        parse(&longest).unwrap(),
        (ProxyHeader::Local, PREFIX_LEN + MAX_PAYLOAD_LEN)
    );
}

#[test]
fn the_errors_tell_the_operator_what_to_configure() {
    assert!(
        HeaderError::VersionOne
            .to_string()
            .contains("send-proxy-v2")
    );
    assert!(
        HeaderError::NoSignature
            .to_string()
            .contains("--trusted-proxy")
    );
    assert!(
        HeaderError::NoSignature
            .to_string()
            .contains("send-proxy-v2")
    );
}

#[test]
fn every_cut_of_a_header_is_incomplete() {
    let mut payload = ipv4_block(v4("198.51.100.7:5000"), v4("198.51.100.1:8443"));
    payload.extend(tlv(0x30, b"id"));
    let whole = header(0x21, 0x11, &payload);
    for cut in 0..whole.len() {
        let needed = if cut < PREFIX_LEN {
            PREFIX_LEN
        } else {
            whole.len()
        };
        assert_eq!(
            parse(&whole[..cut]),
            Err(HeaderError::Incomplete { needed }),
            "cut at {cut}"
        );
    }
    assert!(parse(&whole).is_ok());
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_a_header_never_claims_more_than_it_has(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        signed in any::<bool>(),
    ) {
        let mut input = if signed { SIGNATURE.to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        if let Ok((_, used)) = parse(&input) {
            prop_assert!(used >= PREFIX_LEN);
            prop_assert!(used <= input.len());
            prop_assert_eq!(parse(&input[..used]), parse(&input));
        }
    }

    #[test]
    fn any_forwarded_address_survives_the_round_trip(
        source_ip in address(),
        source_port in any::<u16>(),
        destination_port in any::<u16>(),
        tlvs in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)), 0..4),
        trailing in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let source = SocketAddr::new(source_ip, source_port);
        let (destination, mut payload, family) = match source_ip {
            IpAddr::V4(_) => {
                let destination = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), destination_port);
                (destination, ipv4_block(source, destination), 0x11)
            }
            IpAddr::V6(_) => {
                let destination = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), destination_port);
                (destination, ipv6_block(source, destination), 0x21)
            }
        };
        for (kind, value) in &tlvs {
            payload.extend(tlv(*kind, value));
        }
        let mut bytes = header(0x21, family, &payload);
        let total = bytes.len();
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(
            parse(&bytes),
            Ok((ProxyHeader::Proxied { source, destination }, total))
        );
    }
}
