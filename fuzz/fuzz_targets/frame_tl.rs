//! Fuzzes everything a peer's bytes go through after TLS: frame splitting,
//! then TL decoding of the packet and of every role message it may carry.
#![no_main]

use bytes::BytesMut;
use cocoon_wire::{client, common, decode, frame, proxy, worker, TcpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut seqno = 0i32;
    while let Ok(Some(f)) = frame::split_frame(&mut buf, seqno) {
        seqno = seqno.wrapping_add(1);
        let inner = match cocoon_wire::decode_packet(&f) {
            Ok(TcpPacket::Packet { data }) | Ok(TcpPacket::Query { data, .. }) => data,
            Ok(TcpPacket::QueryAnswer { data, .. }) => data,
            _ => continue,
        };
        let _ = decode::<client::ClientRequest>(&inner);
        let _ = decode::<proxy::ProxyRequest>(&inner);
        let _ = decode::<worker::WorkerRequest>(&inner);
        let _ = decode::<client::ClientQueryAnswerEx>(&inner);
        let _ = decode::<proxy::ProxyQueryAnswerEx>(&inner);
        let _ = decode::<proxy::RequestPayment>(&inner);
        let _ = decode::<common::HttpRequest>(&inner);
        let _ = decode::<common::HttpResponse>(&inner);
    }
});
