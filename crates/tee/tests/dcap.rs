//! DCAP verification of the real TDX sample quote that ships with dcap-qvl
//! (fixtures/tdx_quote and its collateral, MIT licensed).
//!
//! The collateral is valid from 2025-06-19T10:32:27Z (QE identity issue
//! date) to 2025-07-19T10:00:35Z (the PCK CRL's nextUpdate).

use cocoon_tee::dcap::{self, DcapError, INTEL_ROOT_CA_DER};
use cocoon_tee::policy::{Policy, PolicyKind, Verifier};
use cocoon_tee::quote::{build_fake_quote, TdxQuote};
use cocoon_tee::{AttestError, Measurements};

const QUOTE: &[u8] = include_bytes!("fixtures/tdx_quote");
const COLLATERAL: &str = include_str!("fixtures/tdx_quote_collateral.json");
/// 2025-07-01T00:00:00Z, inside the window.
const INSIDE: u64 = 1_751_328_000;
/// One second after the PCK CRL's nextUpdate.
const AFTER_CRL: u64 = 1_752_919_236;

fn collateral() -> dcap_qvl::QuoteCollateralV3 {
    dcap::parse_collateral(COLLATERAL).unwrap()
}

#[test]
fn sample_quote_parses_as_real_tdx() {
    let q = TdxQuote::parse(QUOTE).unwrap();
    assert!(!q.is_fake());
    assert!(!q.is_debug());
    assert_eq!(q.att_key_type, 2);
    assert_eq!(q.image_hash(), q.measurements.image_hash());
}

#[test]
fn verifies_inside_the_collateral_window() {
    let r = dcap::verify_quote(QUOTE, &collateral(), INSIDE, INTEL_ROOT_CA_DER).unwrap();
    assert_eq!(r.tcb_status, "UpToDate");
    assert_eq!(r.root_key_id, dcap::root_key_id(INTEL_ROOT_CA_DER).unwrap());
}

#[test]
fn fails_after_the_crl_next_update() {
    let err = dcap::verify_quote(QUOTE, &collateral(), AFTER_CRL, INTEL_ROOT_CA_DER).unwrap_err();
    assert!(matches!(err, DcapError::Rejected(_)), "{err}");
}

#[test]
fn fails_with_one_byte_flipped() {
    // Header, TD report body, and the ECDSA signature in the signature data.
    for at in [20usize, 200, 600, 636 + 10] {
        let mut q = QUOTE.to_vec();
        q[at] ^= 0x01;
        let err = dcap::verify_quote(&q, &collateral(), INSIDE, INTEL_ROOT_CA_DER).unwrap_err();
        assert!(matches!(err, DcapError::Rejected(_)), "byte {at}: {err}");
    }
}

#[test]
fn bad_collateral_json_is_named() {
    assert!(matches!(
        dcap::parse_collateral("{}"),
        Err(DcapError::BadCollateral(_))
    ));
}

fn tdx_policy() -> Policy {
    Policy {
        collateral: Some(collateral()),
        ..Policy::new(PolicyKind::Tdx)
    }
}

#[test]
fn tdx_policy_accepts_the_real_quote_and_applies_allow_lists() {
    let q = TdxQuote::parse(QUOTE).unwrap();
    let v = Verifier::at_time(tdx_policy(), INSIDE);
    let report = v
        .check_quote(&q, QUOTE, INSIDE)
        .unwrap()
        .expect("verified as real");
    assert_eq!(report.tcb_status, "UpToDate");

    let v = Verifier::at_time(
        Policy {
            allowed_image_hashes: vec![q.image_hash()],
            allowed_mrtd: vec![q.measurements.mr_td],
            allowed_rtmrs: vec![q.measurements.rtmr],
            allowed_root_key_ids: vec![report.root_key_id],
            ..tdx_policy()
        },
        INSIDE,
    );
    assert!(v.check_quote(&q, QUOTE, INSIDE).is_ok());
}

#[test]
fn tdx_policy_refusals() {
    let q = TdxQuote::parse(QUOTE).unwrap();
    let check = |p: Policy| {
        Verifier::at_time(p, INSIDE)
            .check_quote(&q, QUOTE, INSIDE)
            .unwrap_err()
    };

    assert_eq!(
        check(Policy {
            allowed_root_key_ids: vec![[7; 48]],
            ..tdx_policy()
        }),
        AttestError::RootKeyIdNotAllowed(hex::encode(
            dcap::root_key_id(INTEL_ROOT_CA_DER).unwrap()
        ))
    );
    assert_eq!(
        check(Policy {
            allowed_tcb_statuses: vec![],
            ..tdx_policy()
        }),
        AttestError::TcbStatusNotAllowed("UpToDate".into())
    );
    assert_eq!(
        check(Policy {
            allowed_image_hashes: vec![[1; 32]],
            ..tdx_policy()
        }),
        AttestError::ImageHashNotAllowed(hex::encode(q.image_hash()))
    );
    assert_eq!(
        check(Policy {
            allowed_mrtd: vec![[1; 48]],
            ..tdx_policy()
        }),
        AttestError::MrtdNotAllowed(hex::encode(q.measurements.mr_td))
    );
    assert_eq!(
        check(Policy {
            allowed_rtmrs: vec![[[1; 48]; 4]],
            ..tdx_policy()
        }),
        AttestError::RtmrNotAllowed
    );
    assert_eq!(
        check(Policy {
            collateral: None,
            ..tdx_policy()
        }),
        AttestError::MissingCollateral
    );
    let err = Verifier::at_time(tdx_policy(), AFTER_CRL)
        .check_quote(&q, QUOTE, AFTER_CRL)
        .unwrap_err();
    assert!(
        matches!(err, AttestError::Dcap(DcapError::Rejected(_))),
        "{err}"
    );
}

#[test]
fn fake_quote_is_refused_by_tdx_and_accepted_by_fake_tdx() {
    let raw = build_fake_quote(&Measurements::default(), &[0; 64]);
    let q = TdxQuote::parse(&raw).unwrap();
    assert!(q.is_fake());
    let v = Verifier::at_time(tdx_policy(), INSIDE);
    assert_eq!(
        v.check_quote(&q, &raw, INSIDE).unwrap_err(),
        AttestError::FakeQuoteRejected
    );
    // Even with the fake marker removed, Intel's signature is missing.
    let mut forged = raw.clone();
    forged[12..28].copy_from_slice(&[0x93; 16]);
    let fq = TdxQuote::parse(&forged).unwrap();
    let err = v.check_quote(&fq, &forged, INSIDE).unwrap_err();
    assert!(matches!(err, AttestError::Dcap(_)), "{err}");

    let v = Verifier::at_time(Policy::new(PolicyKind::FakeTdx), INSIDE);
    assert_eq!(v.check_quote(&q, &raw, INSIDE).unwrap(), None);
}

#[test]
fn malformed_quotes_are_named() {
    use cocoon_tee::quote::QuoteError;
    assert_eq!(
        TdxQuote::parse(&QUOTE[..100]).unwrap_err(),
        QuoteError::TooShort(100)
    );
    let mut v5 = QUOTE.to_vec();
    v5[0] = 5;
    assert_eq!(
        TdxQuote::parse(&v5).unwrap_err(),
        QuoteError::UnsupportedVersion(5)
    );
    let mut sgx = QUOTE.to_vec();
    sgx[4] = 0;
    assert_eq!(TdxQuote::parse(&sgx).unwrap_err(), QuoteError::NotTdx(0));
    let short = &QUOTE[..636 + 100];
    assert!(matches!(
        TdxQuote::parse(short).unwrap_err(),
        QuoteError::BadSignatureLength { .. }
    ));
}
