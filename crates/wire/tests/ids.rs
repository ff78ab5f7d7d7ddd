//! Constructor ids: computed by tl-proto from `src/cocoon.tl` at compile
//! time; checked here against an independent CRC32 of the normalized
//! definitions, and against ids known from the reference network's compiled
//! schema.

use cocoon_wire::client::{ClientParams, ClientRequest, WorkerTypesV2};
use cocoon_wire::common::{HttpRequest, HttpResponse, SignedPayment, TokensUsed};
use cocoon_wire::proxy::{ProxyParams, ProxyRequest};
use cocoon_wire::tcp::TcpPacket;
use cocoon_wire::worker::{WorkerParams, WorkerRequest};
use tl_proto::BoxedConstructor;

fn crc(def: &str) -> u32 {
    crc32fast::hash(def.as_bytes())
}

#[test]
fn ids_are_crc32_of_the_normalized_definition() {
    assert_eq!(TcpPacket::TL_ID_PING, crc("tcp.ping id:long = tcp.Packet"));
    assert_eq!(
        TcpPacket::TL_ID_QUERY_ERROR,
        crc("tcp.queryError id:long code:int message:string = tcp.Packet")
    );
    assert_eq!(
        TokensUsed::TL_ID,
        crc("tokensUsed prompt_tokens_used:long cached_tokens_used:long completion_tokens_used:long reasoning_tokens_used:long total_tokens_used:long = TokensUsed")
    );
    assert_eq!(
        SignedPayment::TL_ID_EMPTY,
        crc("proxy.signedPaymentEmpty = proxy.SignedPayment")
    );
    // TON's well-known id, computed the same way.
    assert_eq!(crc("pub.ed25519 key:int256 = PublicKey"), 0x4813b4c6);
}

#[test]
fn ids_match_the_reference_network() {
    assert_eq!(TcpPacket::TL_ID_PING, 0xbbe9627c);
    assert_eq!(TcpPacket::TL_ID_PONG, 0x0bd4302c);
    assert_eq!(TcpPacket::TL_ID_QUERY, 0x3af51908);
    assert_eq!(TcpPacket::TL_ID_PACKET, 0x9c17baf8);
    assert_eq!(TcpPacket::TL_ID_QUERY_ANSWER, 0xc048c311);
    assert_eq!(TokensUsed::TL_ID, 0x70c5b15c);
    assert_eq!(HttpRequest::TL_ID, 0x47492de5);
    assert_eq!(HttpResponse::TL_ID, 0x1cd0c42b);
    assert_eq!(ClientRequest::TL_ID_RUN_QUERY, 0xbc748f32);
    assert_eq!(SignedPayment::TL_ID_SIGNED, 0x02998182);
    assert_eq!(ProxyRequest::TL_ID_RUN_QUERY_EX, 0xc805e7e2);
    assert_eq!(WorkerRequest::TL_ID_CONNECT_TO_PROXY, 0xcc484c5d);
    // Explicit ids in the scheme.
    assert_eq!(WorkerParams::TL_ID, 0x869c73ed);
    assert_eq!(ProxyParams::TL_ID, 0xd5c5609f);
    assert_eq!(ClientParams::TL_ID, 0x40fdca64);
    let _ = WorkerTypesV2::TL_ID;
}

#[test]
fn boxed_encoding_starts_with_the_id() {
    let bytes = cocoon_wire::encode(&TcpPacket::Ping { id: 7 });
    assert_eq!(&bytes[..4], &0xbbe9627cu32.to_le_bytes());
    assert_eq!(&bytes[4..], &7u64.to_le_bytes());
}

#[test]
fn double_is_raw_ieee_bits() {
    use cocoon_wire::common::Double;
    let bytes = cocoon_wire::encode(&Double(1.5));
    assert_eq!(bytes, 1.5f64.to_bits().to_le_bytes());
}
