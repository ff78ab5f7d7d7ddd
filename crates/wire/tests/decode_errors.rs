//! Every decoder failure is a typed error naming the type; nothing panics.

use cocoon_wire::client::ClientRequest;
use cocoon_wire::common::HttpRequest;
use cocoon_wire::{decode, decode_packet, encode, DecodeError, TcpPacket};

#[test]
fn truncated_packet() {
    let bytes = encode(&TcpPacket::Query {
        id: 1,
        data: vec![1, 2, 3, 4, 5],
    });
    for cut in 0..bytes.len() {
        let err = decode_packet(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, DecodeError::Truncated { what: "TcpPacket" }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn unknown_constructor() {
    let err = decode_packet(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnknownConstructor {
            what: "TcpPacket",
            id: 0xefbeadde
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown constructor in TcpPacket (the object starts with 0xefbeadde)"
    );
}

#[test]
fn trailing_bytes() {
    let mut bytes = encode(&TcpPacket::Pong { id: 9 });
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        decode_packet(&bytes).unwrap_err(),
        DecodeError::TrailingBytes {
            what: "TcpPacket",
            extra: 4
        }
    );
}

#[test]
fn bad_bool_is_an_unknown_constructor() {
    // proxyHandshakeComplete is_disabled:Bool with a bool that is neither id.
    let mut bytes =
        encode(&cocoon_wire::worker::WorkerRequest::ProxyHandshakeComplete { is_disabled: true });
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&[1, 2, 3, 4]);
    let err = decode::<cocoon_wire::worker::WorkerRequest>(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::UnknownConstructor {
                what: "WorkerRequest",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn huge_vector_length_is_truncation_not_allocation() {
    // http.request with a headers vector claiming 2^32-1 elements.
    let mut bytes = HttpRequest::TL_ID.to_le_bytes().to_vec();
    for _ in 0..3 {
        bytes.extend_from_slice(&[0, 0, 0, 0]); // three empty strings
    }
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = decode::<HttpRequest>(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { .. }), "{err:?}");
}

#[test]
fn function_enum_rejects_a_type_id() {
    let bytes = encode(&TcpPacket::Ping { id: 1 });
    assert!(matches!(
        decode::<ClientRequest>(&bytes).unwrap_err(),
        DecodeError::UnknownConstructor {
            what: "ClientRequest",
            ..
        }
    ));
}
