//! The PROXY protocol, version 2: the binary header a load balancer (HAProxy's
//! `send-proxy-v2`) writes at the start of each connection it opens to a backend, naming the
//! client it forwards.
//!
//! Pure: bytes in, a [`ProxyHeader`] or a [`HeaderError`] out, no I/O. The listener reads the
//! fixed 16-byte [prefix](PREFIX_LEN) first, learns from [`payload_len`] how many bytes follow
//! (at most [`MAX_PAYLOAD_LEN`]), reads exactly those and hands both to [`parse_payload`], so
//! nothing past the header is consumed: the TLS handshake that follows stays in the socket.
//! [`parse`] does the same on a buffer, for tests and the fuzzer.
//!
//! Strict: the 12-byte signature, version 2, the LOCAL or PROXY command; with PROXY, TCP over
//! IPv4 or IPv6 only (what a TCP balancer forwards), the address block complete, and any TLVs
//! after it well-formed and filling the rest exactly (their contents are not used). With LOCAL
//! (a balancer's own health check) the block is skipped unread, as the specification asks: the
//! connection is the balancer's own, and the caller uses the peer's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The signature every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of the fixed part: signature, version and command, family and transport, length.
pub const PREFIX_LEN: usize = 16;
/// Longest address block and TLVs accepted after the prefix. An IPv6 block is 36 bytes; the
/// rest is room for the TLVs a balancer may add (ALPN, authority, unique id, SSL details). The
/// format allows 65,535; a header this server does not need is refused rather than buffered.
pub const MAX_PAYLOAD_LEN: usize = 1024;
/// Length of the TCP-over-IPv4 address block: two addresses and two ports.
const IPV4_BLOCK: usize = 12;
/// Length of the TCP-over-IPv6 address block.
const IPV6_BLOCK: usize = 36;
/// Family and transport byte of TCP over IPv4.
const TCP_OVER_IPV4: u8 = 0x11;
/// Family and transport byte of TCP over IPv6.
const TCP_OVER_IPV6: u8 = 0x21;
/// Version 2 in the high four bits of the thirteenth byte.
const VERSION_2: u8 = 0x2;
/// The LOCAL command: the balancer's own connection (a health check).
const LOCAL: u8 = 0x0;
/// The PROXY command: a forwarded client.
const PROXY: u8 = 0x1;
/// How a version 1 (text) header begins.
const V1_START: &[u8] = b"PROXY ";

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer's own connection (a health check): the peer's address is the client's.
    Local,
    /// A forwarded TCP connection.
    Proxied {
        /// The client's address and port, as the balancer saw them.
        source: SocketAddr,
        /// The address and port the client connected to (the balancer's frontend).
        destination: SocketAddr,
    },
}

/// Why a header was refused: the peer sent something that is not a header this server reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// [`parse`] only: the buffer ends before the header does.
    #[error("the header is incomplete: {needed} bytes in all are needed")]
    Incomplete {
        /// Bytes the header needs in all (known once the prefix is in).
        needed: usize,
    },
    /// A version 1 header, the text one.
    #[error(
        "the balancer sent a PROXY protocol version 1 (text) header; only version 2 is read: use `send-proxy-v2` (not `send-proxy`) on HAProxy's server lines"
    )]
    VersionOne,
    /// The first bytes are not the signature.
    #[error(
        "the connection does not begin with a PROXY protocol v2 header; every connection from a --trusted-proxy address must carry one (HAProxy: `send-proxy-v2` on each server line)"
    )]
    NoSignature,
    /// The signature, then another version.
    #[error("PROXY protocol version {0} is not known; only version 2 is read")]
    Version(u8),
    /// A command other than LOCAL and PROXY.
    #[error("PROXY protocol command {0} is not known; 0 (LOCAL) and 1 (PROXY) exist")]
    Command(u8),
    /// More than [`MAX_PAYLOAD_LEN`] bytes follow the prefix.
    #[error("the header announces {len} bytes of addresses and TLVs; at most {max} are accepted")]
    TooLong {
        /// Announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A PROXY command for something other than TCP over IPv4 or IPv6.
    #[error(
        "the header forwards address family and transport 0x{0:02x}; only TCP over IPv4 (0x11) or IPv6 (0x21) is accepted"
    )]
    Family(u8),
    /// The announced length cannot hold the addresses.
    #[error("the header announces {len} bytes, fewer than the {needed} its addresses take")]
    ShortAddresses {
        /// Announced length.
        len: usize,
        /// What the family needs.
        needed: usize,
    },
    /// The TLVs after the addresses do not fill the rest exactly.
    #[error("the TLV at byte {offset} after the prefix runs past the header's end ({len} bytes)")]
    Tlv {
        /// Where the TLV starts, counted from the end of the prefix.
        offset: usize,
        /// The announced length.
        len: usize,
    },
}

/// Checks the fixed prefix and returns how many bytes follow it.
pub fn payload_len(prefix: &[u8; PREFIX_LEN]) -> Result<usize, HeaderError> {
    if prefix.starts_with(V1_START) {
        return Err(HeaderError::VersionOne);
    }
    if prefix[..SIGNATURE.len()] != SIGNATURE {
        return Err(HeaderError::NoSignature);
    }
    let version = prefix[12] >> 4;
    if version != VERSION_2 {
        return Err(HeaderError::Version(version));
    }
    let command = prefix[12] & 0x0f;
    if command != LOCAL && command != PROXY {
        return Err(HeaderError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([prefix[14], prefix[15]]));
    if len > MAX_PAYLOAD_LEN {
        return Err(HeaderError::TooLong {
            len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    Ok(len)
}

/// Parses a header from its prefix (already checked by [`payload_len`]) and the `payload`
/// that followed it, exactly [`payload_len`] bytes.
pub fn parse_payload(
    prefix: &[u8; PREFIX_LEN],
    payload: &[u8],
) -> Result<ProxyHeader, HeaderError> {
    if prefix[12] & 0x0f == LOCAL {
        return Ok(ProxyHeader::Local);
    }
    let (source, destination, block) = match prefix[13] {
        TCP_OVER_IPV4 => {
            let block = need(payload, IPV4_BLOCK)?;
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(block, 8)),
                SocketAddr::new(ip(4), port(block, 10)),
                IPV4_BLOCK,
            )
        }
        TCP_OVER_IPV6 => {
            let block = need(payload, IPV6_BLOCK)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port(block, 32)),
                SocketAddr::new(ip(16), port(block, 34)),
                IPV6_BLOCK,
            )
        }
        other => return Err(HeaderError::Family(other)),
    };
    check_tlvs(payload, block)?;
    Ok(ProxyHeader::Proxied {
        source,
        destination,
    })
}

/// Parses the header at the start of `bytes`; returns it and how many bytes it took.
pub fn parse(bytes: &[u8]) -> Result<(ProxyHeader, usize), HeaderError> {
    let Some(prefix) = bytes.first_chunk::<PREFIX_LEN>() else {
        // Say what is wrong as early as the bytes allow.
        let seen = bytes.len().min(SIGNATURE.len());
        if bytes.len() >= V1_START.len() && bytes.starts_with(V1_START) {
            return Err(HeaderError::VersionOne);
        }
        if bytes[..seen] != SIGNATURE[..seen] {
            return Err(HeaderError::NoSignature);
        }
        return Err(HeaderError::Incomplete { needed: PREFIX_LEN });
    };
    let len = payload_len(prefix)?;
    let total = PREFIX_LEN + len;
    let payload = bytes
        .get(PREFIX_LEN..total)
        .ok_or(HeaderError::Incomplete { needed: total })?;
    Ok((parse_payload(prefix, payload)?, total))
}

/// The first `needed` bytes of the payload, or why they are missing.
fn need(payload: &[u8], needed: usize) -> Result<&[u8], HeaderError> {
    payload.get(..needed).ok_or(HeaderError::ShortAddresses {
        len: payload.len(),
        needed,
    })
}

fn port(block: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([block[at], block[at + 1]])
}

/// Walks the TLVs from `offset` to the end: each a type byte, a two-byte length and its value.
fn check_tlvs(payload: &[u8], mut offset: usize) -> Result<(), HeaderError> {
    while offset < payload.len() {
        let bad = HeaderError::Tlv {
            offset,
            len: payload.len(),
        };
        let Some(&[_, high, low]) = payload.get(offset..offset + 3) else {
            return Err(bad);
        };
        let end = offset + 3 + usize::from(u16::from_be_bytes([high, low]));
        if end > payload.len() {
            return Err(bad);
        }
        offset = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
