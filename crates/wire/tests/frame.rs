//! Framing: bounds checked before allocation, partial frames wait, EOF in a
//! frame is an error.

use bytes::BytesMut;
use cocoon_wire::frame::split_frame;
use cocoon_wire::{FrameCodec, FrameError, MAX_FRAME_LEN};
use tokio_util::codec::{Decoder, Encoder};

#[test]
fn round_trip_and_partial_frames() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(&b"abcdefgh"[..], &mut buf).unwrap();
    codec.encode(vec![1u8, 2, 3, 4], &mut buf).unwrap();
    let whole = buf.clone();
    // Feed byte by byte: frames appear only when complete.
    let mut feed = BytesMut::new();
    let mut out = Vec::new();
    for b in whole.iter() {
        feed.extend_from_slice(&[*b]);
        while let Some(f) = codec.decode(&mut feed).unwrap() {
            out.push(f.to_vec());
        }
    }
    assert_eq!(out, vec![b"abcdefgh".to_vec(), vec![1, 2, 3, 4]]);
}

#[test]
fn too_short_length_is_refused() {
    for len in 0u32..4 {
        let mut buf = BytesMut::from(&len.to_le_bytes()[..]);
        assert!(
            matches!(split_frame(&mut buf, 0), Err(FrameError::TooShort(l)) if l == len as usize)
        );
    }
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes()[..]);
    assert!(matches!(
        split_frame(&mut buf, 0),
        Err(FrameError::TooLong(_))
    ));
    let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
    assert!(matches!(
        split_frame(&mut buf, 0),
        Err(FrameError::TooLong(_))
    ));
    // Exactly the maximum is legal (only a prefix has arrived: wait).
    let mut buf = BytesMut::from(&(MAX_FRAME_LEN as u32).to_le_bytes()[..]);
    assert!(split_frame(&mut buf, 0).unwrap().is_none());
}

#[test]
fn encoder_refuses_out_of_range_bodies() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    assert!(matches!(
        codec.encode(&b"abc"[..], &mut buf),
        Err(FrameError::TooShort(3))
    ));
    let big = vec![0u8; MAX_FRAME_LEN + 1];
    assert!(matches!(
        codec.encode(&big[..], &mut buf),
        Err(FrameError::TooLong(_))
    ));
    assert!(buf.is_empty());
}

#[test]
fn eof_inside_a_frame_is_an_error() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0, 1, 2][..]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(FrameError::Incomplete(10))
    ));
    let mut empty = BytesMut::new();
    assert!(codec.decode_eof(&mut empty).unwrap().is_none());
}

#[test]
fn frames_carry_seqnos_from_zero_in_each_direction() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(&b"abcd"[..], &mut buf).unwrap();
    codec.encode(&b"efgh"[..], &mut buf).unwrap();
    // The reference layout: len (body only), seqno, body.
    assert_eq!(
        &buf[..],
        &[
            4, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', b'd', 4, 0, 0, 0, 1, 0, 0, 0, b'e', b'f',
            b'g', b'h'
        ][..]
    );
    assert_eq!(codec.out_seqno(), 2);
    let mut reader = FrameCodec::default();
    assert_eq!(&reader.decode(&mut buf).unwrap().unwrap()[..], b"abcd");
    assert_eq!(&reader.decode(&mut buf).unwrap().unwrap()[..], b"efgh");
    assert_eq!(reader.in_seqno(), 2);
}

#[test]
fn a_skipped_or_repeated_seqno_is_refused() {
    let mut frames = BytesMut::new();
    cocoon_wire::frame::put_frame(b"abcd", 0, &mut frames).unwrap();
    cocoon_wire::frame::put_frame(b"abcd", 0, &mut frames).unwrap();
    let mut reader = FrameCodec::default();
    assert!(reader.decode(&mut frames).unwrap().is_some());
    assert!(matches!(
        reader.decode(&mut frames),
        Err(FrameError::BadSeqno {
            expected: 1,
            got: 0
        })
    ));
    let mut skipped = BytesMut::new();
    cocoon_wire::frame::put_frame(b"abcd", 5, &mut skipped).unwrap();
    assert!(matches!(
        FrameCodec::default().decode(&mut skipped),
        Err(FrameError::BadSeqno {
            expected: 0,
            got: 5
        })
    ));
}
