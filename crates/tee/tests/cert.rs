//! RA-TLS certificates: generation, parsing and every refusal, each with
//! its specific error.

use cocoon_tee::cert::{self, CertError, CertOptions};
use cocoon_tee::claims::{Claims, ClaimsError};
use cocoon_tee::policy::{Policy, PolicyKind, TeeKind, Verifier};
use cocoon_tee::provider::{ProviderError, QuoteProvider};
use cocoon_tee::{AttestError, FakeTdxProvider, Measurements, RaTlsCert};

const NOW: u64 = 1_750_000_000;
const DAY: u64 = 86_400;

fn measurements(seed: u8) -> Measurements {
    Measurements {
        mr_td: [seed; 48],
        rtmr: [
            [seed + 1; 48],
            [seed + 2; 48],
            [seed + 3; 48],
            [seed + 4; 48],
        ],
        ..Measurements::default()
    }
}

fn fake(seed: u8) -> FakeTdxProvider {
    FakeTdxProvider {
        measurements: measurements(seed),
    }
}

fn new_cert(provider: &dyn QuoteProvider, opts: CertOptions) -> RaTlsCert {
    let key = cert::generate_key().unwrap();
    let claims = Claims::new(key.public_key_raw().try_into().unwrap());
    cert::generate(&key, &claims, provider, &opts).unwrap()
}

fn verify(kind: PolicyKind, der: &[u8]) -> Result<cocoon_tee::PeerIdentity, AttestError> {
    Verifier::at_time(Policy::new(kind), NOW + 60).verify_cert(der)
}

#[test]
fn fake_cert_is_accepted_by_fake_tdx_and_any() {
    let (c, claims) = cert::generate_new(&fake(1), &CertOptions::new("worker-1", NOW)).unwrap();
    let id = verify(PolicyKind::FakeTdx, &c.cert_der).unwrap();
    assert_eq!(id.tee, TeeKind::FakeTdx);
    assert_eq!(id.public_key, claims.public_key);
    assert_eq!(id.image_hash, Some(measurements(1).image_hash()));
    assert!(id.claims.is_key_only());
    assert_eq!(id.not_after - id.not_before, DAY);
    assert_eq!(
        verify(PolicyKind::Any, &c.cert_der).unwrap().tee,
        TeeKind::FakeTdx
    );
}

#[test]
fn generation_refuses_claims_for_another_key() {
    let key = cert::generate_key().unwrap();
    let claims = Claims::new([9; 32]);
    let err = cert::generate(&key, &claims, &fake(1), &CertOptions::new("x", NOW)).unwrap_err();
    assert!(matches!(err, CertError::ClaimsKeyMismatch), "{err}");
}

/// Replays one fixed quote, whatever report data it is asked to bind.
struct ReplayProvider(Vec<u8>);
impl QuoteProvider for ReplayProvider {
    fn quote(&self, _: &[u8; 64]) -> Result<Vec<u8>, ProviderError> {
        Ok(self.0.clone())
    }
    fn name(&self) -> &'static str {
        "replay"
    }
}

#[test]
fn quote_bound_to_another_key_is_refused() {
    let victim = cert::generate_new(&fake(1), &CertOptions::new("victim", NOW))
        .unwrap()
        .0;
    let stolen = cert::parse_cert(&victim.cert_der)
        .unwrap()
        .quote_raw
        .unwrap();
    let thief = new_cert(&ReplayProvider(stolen), CertOptions::new("thief", NOW));
    assert_eq!(
        verify(PolicyKind::FakeTdx, &thief.cert_der).unwrap_err(),
        AttestError::QuoteNotBound
    );
    // Even `any` checks the binding of a quote that is present.
    assert_eq!(
        verify(PolicyKind::Any, &thief.cert_der).unwrap_err(),
        AttestError::QuoteNotBound
    );
}

#[test]
fn tampered_quote_inside_a_cert_breaks_its_signature() {
    let c = new_cert(&fake(1), CertOptions::new("t", NOW));
    let quote = cert::parse_cert(&c.cert_der).unwrap().quote_raw.unwrap();
    // Find the quote inside the DER and flip a byte of its MRTD.
    let at = c
        .cert_der
        .windows(quote.len())
        .position(|w| w == quote)
        .unwrap();
    let mut der = c.cert_der.clone();
    der[at + 48 + 136] ^= 1;
    assert_eq!(
        verify(PolicyKind::FakeTdx, &der).unwrap_err(),
        AttestError::BadCertSignature
    );
}

#[test]
fn expired_and_not_yet_valid_certs_are_refused() {
    let old = new_cert(&fake(1), CertOptions::new("old", NOW - 3 * DAY));
    assert_eq!(
        verify(PolicyKind::FakeTdx, &old.cert_der).unwrap_err(),
        AttestError::CertExpired {
            not_after: NOW - 2 * DAY,
            now: NOW + 60
        }
    );
    let future = new_cert(&fake(1), CertOptions::new("future", NOW + DAY));
    assert_eq!(
        verify(PolicyKind::Any, &future.cert_der).unwrap_err(),
        AttestError::CertNotYetValid {
            not_before: NOW + DAY,
            now: NOW + 60
        }
    );
}

#[test]
fn unknown_critical_extension_is_refused_and_non_critical_ignored() {
    let oid = vec![1, 3, 6, 1, 4, 1, 12345, 99];
    let mut opts = CertOptions::new("x", NOW);
    opts.extra_extensions
        .push((oid.clone(), vec![0x05, 0x00], true));
    let c = new_cert(&fake(1), opts);
    assert_eq!(
        verify(PolicyKind::Any, &c.cert_der).unwrap_err(),
        AttestError::UnknownCriticalExtension("1.3.6.1.4.1.12345.99".into())
    );
    let mut opts = CertOptions::new("x", NOW);
    opts.extra_extensions.push((oid, vec![0x05, 0x00], false));
    assert!(verify(PolicyKind::FakeTdx, &new_cert(&fake(1), opts).cert_der).is_ok());
}

#[test]
fn allow_lists_refuse_other_measurements() {
    let c = new_cert(&fake(1), CertOptions::new("x", NOW));
    let good = measurements(1);
    let at = |p: Policy| Verifier::at_time(p, NOW + 60).verify_cert(&c.cert_der);
    let base = Policy::new(PolicyKind::FakeTdx);
    assert_eq!(
        at(Policy {
            allowed_image_hashes: vec![measurements(2).image_hash()],
            ..base.clone()
        })
        .unwrap_err(),
        AttestError::ImageHashNotAllowed(hex::encode(good.image_hash()))
    );
    assert_eq!(
        at(Policy {
            allowed_mrtd: vec![[2; 48]],
            ..base.clone()
        })
        .unwrap_err(),
        AttestError::MrtdNotAllowed(hex::encode(good.mr_td))
    );
    assert_eq!(
        at(Policy {
            allowed_rtmrs: vec![measurements(2).rtmr],
            ..base.clone()
        })
        .unwrap_err(),
        AttestError::RtmrNotAllowed
    );
    let all = Policy {
        allowed_image_hashes: vec![measurements(2).image_hash(), good.image_hash()],
        allowed_mrtd: vec![good.mr_td],
        allowed_rtmrs: vec![good.rtmr],
        ..base
    };
    assert!(at(all).is_ok());
}

#[test]
fn fake_quote_under_tdx_is_refused() {
    let c = new_cert(&fake(1), CertOptions::new("x", NOW));
    assert_eq!(
        verify(PolicyKind::Tdx, &c.cert_der).unwrap_err(),
        AttestError::FakeQuoteRejected
    );
}

#[test]
fn debug_td_is_refused_unless_allowed() {
    struct DebugTd;
    impl QuoteProvider for DebugTd {
        fn quote(&self, rd: &[u8; 64]) -> Result<Vec<u8>, ProviderError> {
            let mut q = cocoon_tee::quote::build_fake_quote(&Measurements::default(), rd);
            q[48 + 120] |= 1; // TD attributes: DEBUG
            Ok(q)
        }
        fn name(&self) -> &'static str {
            "debug"
        }
    }
    let c = new_cert(&DebugTd, CertOptions::new("x", NOW));
    assert_eq!(
        verify(PolicyKind::FakeTdx, &c.cert_der).unwrap_err(),
        AttestError::DebugTd
    );
    let p = Policy {
        allow_debug: true,
        ..Policy::new(PolicyKind::FakeTdx)
    };
    assert!(Verifier::at_time(p, NOW).verify_cert(&c.cert_der).is_ok());
}

#[test]
fn plain_certificates_pass_only_the_any_policy() {
    // No RA-TLS extensions at all: what a reference client presents. Its claims are its key.
    let key = cert::generate_key().unwrap();
    let plain = rcgen::CertificateParams::new(vec!["plain".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let id = verify(PolicyKind::Any, plain.der()).unwrap();
    assert_eq!(&id.public_key[..], key.public_key_raw());
    assert_eq!(id.claims, cocoon_tee::Claims::new(id.public_key));
    assert_eq!(
        verify(PolicyKind::FakeTdx, plain.der()).unwrap_err(),
        AttestError::NoQuote
    );
    assert_eq!(
        verify(PolicyKind::Tdx, plain.der()).unwrap_err(),
        AttestError::NoQuote
    );
    // Not Ed25519.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_cert = rcgen::CertificateParams::new(vec!["ec".to_string()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    assert_eq!(
        verify(PolicyKind::Any, ec_cert.der()).unwrap_err(),
        AttestError::NotEd25519
    );
    // Not a certificate.
    assert!(matches!(
        verify(PolicyKind::Any, b"junk").unwrap_err(),
        AttestError::CertParse(_)
    ));
}

#[test]
fn verdicts_are_cached_per_certificate() {
    let c = new_cert(&fake(1), CertOptions::new("x", NOW));
    let v = Verifier::at_time(Policy::new(PolicyKind::FakeTdx), NOW + 60);
    let a = v.verify_cert(&c.cert_der).unwrap();
    let b = v.verify_cert(&c.cert_der).unwrap();
    assert_eq!(a, b);
    assert_eq!(v.cache().stats(), (1, 1));
    // A refused certificate is never cached.
    let bad = new_cert(&fake(1), CertOptions::new("old", NOW - 3 * DAY));
    assert!(v.verify_cert(&bad.cert_der).is_err());
    assert!(v.verify_cert(&bad.cert_der).is_err());
    assert_eq!(v.cache().len(), 1);
}

#[test]
fn pem_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_cert(&fake(1), CertOptions::new("x", NOW));
    let (cp, kp) = c.write_pem(dir.path(), "node").unwrap();
    assert!(cp.ends_with("node.cert.pem") && kp.ends_with("node.key.pem"));
    let back = RaTlsCert::load_pem(&cp, &kp).unwrap();
    assert_eq!(back.cert_der, c.cert_der);
    assert_eq!(back.key_pkcs8, c.key_pkcs8);
    // Swapped files name the problem.
    let err = RaTlsCert::load_pem(&kp, &cp).unwrap_err();
    assert!(
        err.to_string().contains("expected a CERTIFICATE PEM block"),
        "{err}"
    );
}

#[test]
fn claims_round_trip_and_keep_unknown_entries() {
    let c = Claims {
        x25519_key: Some([3; 32]),
        created_at: Some(NOW),
        name: Some("proxy".into()),
        gpu_evidence: Some(vec![1, 2, 3]),
        unknown: vec![(900, b"future".to_vec())],
        ..Claims::new([1; 32])
    };
    let bytes = c.to_bytes();
    assert_eq!(bytes[0], 1);
    assert_eq!(&bytes[1..3], &1u16.to_le_bytes(), "public key first");
    assert_eq!(Claims::parse(&bytes).unwrap(), c);
}

#[test]
fn claims_refusals() {
    // Our extended form (written only when a claim beyond the key is made).
    let good = Claims {
        name: Some("x".into()),
        ..Claims::new([1; 32])
    }
    .to_bytes();
    assert_eq!(good[0], 1, "version byte");
    // COCOON's form: exactly the 32-byte key.
    assert_eq!(Claims::new([1; 32]).to_bytes(), vec![1; 32]);
    assert_eq!(Claims::parse(&[1; 32]).unwrap(), Claims::new([1; 32]));
    assert_eq!(Claims::parse(&[]).unwrap_err(), ClaimsError::Empty);
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        Claims::parse(&v2).unwrap_err(),
        ClaimsError::UnsupportedVersion(2)
    );
    assert_eq!(
        Claims::parse(&good[..10]).unwrap_err(),
        ClaimsError::Truncated(1)
    );
    assert_eq!(
        Claims::parse(&[1]).unwrap_err(),
        ClaimsError::MissingPublicKey
    );
    // A name before the key.
    let mut no_key_first = vec![1u8];
    no_key_first.extend_from_slice(&4u16.to_le_bytes());
    no_key_first.extend_from_slice(&1u32.to_le_bytes());
    no_key_first.push(b'a');
    assert_eq!(
        Claims::parse(&no_key_first).unwrap_err(),
        ClaimsError::MissingPublicKey
    );
    // The key twice.
    let mut twice = good.clone();
    twice.extend_from_slice(&good[1..]);
    assert_eq!(Claims::parse(&twice).unwrap_err(), ClaimsError::TagOrder(1));
    // A 31-byte key.
    let mut short_key = vec![1u8];
    short_key.extend_from_slice(&1u16.to_le_bytes());
    short_key.extend_from_slice(&31u32.to_le_bytes());
    short_key.extend_from_slice(&[0; 31]);
    assert!(matches!(
        Claims::parse(&short_key).unwrap_err(),
        ClaimsError::BadEntry { tag: 1, .. }
    ));
}

#[test]
fn configfs_provider_refusals() {
    use cocoon_tee::ConfigfsTsmProvider;
    let dir = tempfile::tempdir().unwrap();
    let missing = ConfigfsTsmProvider::new(dir.path().join("nope"));
    assert!(matches!(
        missing.quote(&[0; 64]),
        Err(ProviderError::NotAvailable(_))
    ));
    let err = missing.quote(&[0; 64]).unwrap_err().to_string();
    assert!(err.contains("no TDX here"), "{err}");

    // An entry that looks like configfs-tsm but belongs to another TEE.
    let entry = dir.path().join("entry");
    std::fs::create_dir(&entry).unwrap();
    std::fs::write(entry.join("provider"), "sev_guest\n").unwrap();
    assert!(matches!(
        ConfigfsTsmProvider::quote_in_entry(&entry, &[0; 64]),
        Err(ProviderError::WrongProvider(p)) if p == "sev_guest"
    ));
    // A TDX entry whose generation does not advance by exactly one: on a
    // plain directory nothing advances it, as if our write was lost.
    std::fs::write(entry.join("provider"), "tdx_guest\n").unwrap();
    std::fs::write(entry.join("generation"), "7\n").unwrap();
    std::fs::write(entry.join("outblob"), b"quote").unwrap();
    assert!(matches!(
        ConfigfsTsmProvider::quote_in_entry(&entry, &[0; 64]),
        Err(ProviderError::GenerationRace {
            before: 7,
            after: 7
        })
    ));
    assert_eq!(std::fs::read(entry.join("inblob")).unwrap(), vec![0; 64]);
}

/// Certificates made by the reference's own `gen-cert -c 1790000000` (`--tdx fake_tdx` and
/// `--tdx none`): X.509 v1 with the two RA-TLS extensions holding the raw quote (64 bytes:
/// SHA-512 of the key) and the bare key, or no RA-TLS extension at all.
const REF_TIME: u64 = 1_790_000_000;

fn ref_cert(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    cert::read_cert_pem(&path).unwrap()
}

#[test]
fn the_references_fake_tdx_certificate_is_read_as_it_means_it() {
    let der = ref_cert("ref_fake_tdx_cert.pem");
    let parsed = cert::parse_cert(&der).unwrap();
    assert_eq!(parsed.claims_raw, parsed.public_key.to_vec());
    let quote = parsed.quote_raw.clone().unwrap();
    assert_eq!(quote, cert::report_data_for(&parsed.public_key).to_vec());
    let id = Verifier::at_time(Policy::new(PolicyKind::FakeTdx), REF_TIME + 60)
        .verify_cert(&der)
        .unwrap();
    assert_eq!(id.tee, TeeKind::FakeTdx);
    // gen-cert printed this image hash for it: all measurements zero.
    assert_eq!(
        hex::encode(id.image_hash.unwrap()),
        "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61"
    );
    assert_eq!(
        Verifier::at_time(Policy::new(PolicyKind::Tdx), REF_TIME + 60)
            .verify_cert(&der)
            .unwrap_err(),
        AttestError::FakeQuoteRejected
    );
}

#[test]
fn the_references_plain_certificate_passes_only_any() {
    let der = ref_cert("ref_plain_cert.pem");
    let at = |kind| Verifier::at_time(Policy::new(kind), REF_TIME + 60).verify_cert(&der);
    assert_eq!(at(PolicyKind::Any).unwrap().tee, TeeKind::None);
    assert_eq!(at(PolicyKind::FakeTdx).unwrap_err(), AttestError::NoQuote);
}

#[test]
fn our_default_fake_certificate_has_the_references_form() {
    let (c, _) =
        cert::generate_new(&FakeTdxProvider::default(), &CertOptions::new("p", NOW)).unwrap();
    let parsed = cert::parse_cert(&c.cert_der).unwrap();
    // The bare key as claims, SHA-512 of it as the whole quote: what a reference fake_tdx
    // peer makes and checks.
    assert_eq!(parsed.claims_raw, parsed.public_key.to_vec());
    assert_eq!(
        parsed.quote_raw.unwrap(),
        cert::report_data_for(&parsed.public_key).to_vec()
    );
    // A reference-made fake quote copied into our certificate names the wrong key.
    let other = cert::parse_cert(&ref_cert("ref_fake_tdx_cert.pem")).unwrap();
    assert_ne!(
        other.quote_raw.unwrap(),
        cert::report_data_for(&parsed.public_key).to_vec()
    );
}

#[test]
fn our_certificates_name_the_host_every_reference_tls_client_checks() {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    // A reference TLS client verifies its peer for the host name "127.0.0.1", whatever it
    // dials; the reference's own certificates carry these names, and so must ours.
    let (c, _) =
        cert::generate_new(&FakeTdxProvider::default(), &CertOptions::new("p", NOW)).unwrap();
    let plain = cert::generate_plain(&CertOptions::new("c", NOW)).unwrap();
    for der in [&c.cert_der, &plain.cert_der] {
        let (_, x) = X509Certificate::from_der(der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        let dns: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(dns, ["localhost", "127.0.0.1"]);
    }
}

#[test]
fn an_ra_tls_extension_given_twice_is_refused_naming_it() {
    for (oid, name) in [
        (cocoon_tee::QUOTE_EXTENSION_OID, "quote"),
        (cocoon_tee::CLAIMS_EXTENSION_OID, "claims"),
    ] {
        let mut opts = CertOptions::new("x", NOW);
        opts.extra_extensions
            .push((oid.to_vec(), vec![0x04, 0x00], false));
        let c = new_cert(&fake(1), opts);
        assert_eq!(
            verify(PolicyKind::Any, &c.cert_der).unwrap_err(),
            AttestError::DuplicateExtension(name)
        );
    }
}

#[test]
fn a_connection_without_a_peer_certificate_has_no_identity() {
    let c = new_cert(&fake(1), CertOptions::new("server", NOW));
    let v = std::sync::Arc::new(Verifier::at_time(Policy::new(PolicyKind::Any), NOW + 60));
    let config = cocoon_tee::tls::server_config(&c, v.clone()).unwrap();
    // Before any handshake the peer has shown nothing.
    let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
    assert_eq!(
        cocoon_tee::tls::peer_identity(&v, &conn).unwrap_err(),
        AttestError::NoPeerCertificate
    );
}
