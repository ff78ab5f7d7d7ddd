//! Fuzzes what the TLS verifier sees of a peer before trusting it: the
//! certificate, its claims and its quote.
#![no_main]

use cocoon_tee::policy::{Policy, PolicyKind, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cocoon_tee::claims::Claims::parse(data);
    let _ = cocoon_tee::quote::TdxQuote::parse(data);
    let v = Verifier::at_time(Policy::new(PolicyKind::FakeTdx), 1_750_000_000);
    let _ = v.verify_cert_uncached(data, 1_750_000_000);
});
