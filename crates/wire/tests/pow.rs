//! The proof-of-work handshake, over an in-memory duplex stream.

use cocoon_wire::pow::{self, Challenge, PowError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn solved_nonce_verifies_and_others_mostly_do_not() {
    let c = Challenge {
        difficulty_bits: 12,
        salt: [7; 16],
    };
    let nonce = c.solve().unwrap();
    assert!(c.verify(nonce));
    // The smallest solution: nothing below it verifies.
    assert!((0..nonce).all(|n| !c.verify(n)));
}

#[test]
fn leading_zero_bits_reads_the_first_eight_bytes_little_endian() {
    let mut h = [0xffu8; 32];
    h[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    assert_eq!(pow::leading_zero_bits(&h), 12);
    assert_eq!(pow::leading_zero_bits(&[0u8; 32]), 64);
}

#[test]
fn wire_forms_round_trip_and_reject_wrong_ids() {
    let c = Challenge {
        difficulty_bits: 20,
        salt: [1; 16],
    };
    assert_eq!(Challenge::decode(&c.encode()).unwrap(), c);
    assert_eq!(&c.encode()[..4], &0x418e1291u32.to_le_bytes());
    assert_eq!(pow::decode_response(&pow::encode_response(42)).unwrap(), 42);
    let mut bad = c.encode();
    bad[0] ^= 1;
    assert!(matches!(
        Challenge::decode(&bad),
        Err(PowError::UnexpectedMessage { .. })
    ));
    let mut neg = c.encode();
    neg[4..8].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(matches!(
        Challenge::decode(&neg),
        Err(PowError::InvalidDifficulty(-1))
    ));
    let mut bad = pow::encode_response(1);
    bad[3] ^= 0x80;
    assert!(matches!(
        pow::decode_response(&bad),
        Err(PowError::UnexpectedMessage { .. })
    ));
}

#[tokio::test]
async fn handshake_succeeds() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let server = tokio::spawn(async move { pow::server_handshake(&mut a, 10).await });
    let solved = pow::client_handshake(&mut b, 28).await.unwrap();
    assert_eq!(solved, 10);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_refuses_a_too_difficult_challenge() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let server = tokio::spawn(async move { pow::server_handshake(&mut a, 30).await });
    let err = pow::client_handshake(&mut b, 28).await.unwrap_err();
    assert!(
        matches!(
            err,
            PowError::TooDifficult {
                asked: 30,
                limit: 28
            }
        ),
        "{err}"
    );
    drop(b);
    // The server sees the connection close instead of an answer.
    assert!(matches!(server.await.unwrap(), Err(PowError::Io(_))));
}

#[tokio::test]
async fn server_rejects_a_wrong_nonce() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let server = tokio::spawn(async move { pow::server_handshake(&mut a, 24).await });
    let mut raw = [0u8; pow::CHALLENGE_LEN];
    b.read_exact(&mut raw).await.unwrap();
    let c = Challenge::decode(&raw).unwrap();
    // Find a nonce that fails (almost any does at 24 bits).
    let wrong = (0..).find(|n| !c.verify(*n)).unwrap();
    b.write_all(&pow::encode_response(wrong)).await.unwrap();
    assert!(matches!(
        server.await.unwrap(),
        Err(PowError::WrongNonce(24))
    ));
}

#[test]
fn out_of_range_difficulty_is_refused() {
    assert!(matches!(
        Challenge::new(65),
        Err(PowError::InvalidDifficulty(65))
    ));
}
