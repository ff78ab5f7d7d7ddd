//! `cocoon attest …`: RA-TLS certificates and a handshake demo.
//!
//! - `gen-cert` makes a certificate (fake TDX here, real TDX on a TDX guest),
//! - `inspect` shows what a certificate claims,
//! - `verify` applies a policy to it, exactly as a peer would,
//! - `serve` / `connect` run the real connection path (PoW, mutual RA-TLS,
//!   framed TL ping/pong) between two processes on 127.0.0.1,
//! - `demo` runs `serve` as a child process and `connect` against it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cocoon_tee::cert::{self, CertOptions};
use cocoon_tee::dcap;
use cocoon_tee::policy::{Policy, PolicyKind, Verifier};
use cocoon_tee::provider::QuoteProvider;
use cocoon_tee::quote::TdxQuote;
use cocoon_tee::{
    Claims, ConfigfsTsmProvider, FakeTdxProvider, Measurements, PeerIdentity, RaTlsCert,
};
use cocoon_wire::pow;
use cocoon_wire::TcpPacket;
use serde_json::json;

/// The `attest` subcommands.
#[derive(Subcommand)]
pub enum AttestCommand {
    /// Write NAME.cert.pem and NAME.key.pem: a new Ed25519 key and an RA-TLS
    /// certificate carrying a quote bound to it.
    GenCert(GenCertArgs),
    /// Print what a certificate carries: measurements, image hash, key,
    /// validity, and whether its quote is fake.
    Inspect {
        /// The certificate (PEM).
        cert: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply a policy to a certificate; exit 0 and print the identity when
    /// accepted, exit 1 with the reason when refused.
    Verify(VerifyArgs),
    /// Listen for attested connections and answer pings (one side of the demo).
    Serve(ServeArgs),
    /// Connect to `serve`, verify it, and ping it (the other side).
    Connect(ConnectArgs),
    /// Run `serve` in a child process and `connect` to it: a mutual RA-TLS
    /// handshake with proof of work between two processes on 127.0.0.1.
    Demo,
}

/// Which TEE produces the quote.
#[derive(Clone, Copy, ValueEnum)]
pub enum Tee {
    /// FAKE TDX quotes (no Intel signature): for local networks and tests.
    Fake,
    /// Real TDX quotes through configfs-tsm (a TDX guest only).
    Tdx,
}

/// Arguments of `gen-cert`.
#[derive(Args)]
pub struct GenCertArgs {
    /// Where the quote comes from.
    #[arg(long, value_enum)]
    tee: Tee,
    /// File name stem and certificate common name.
    #[arg(long)]
    name: String,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// MRTD of the fake quote (96 hex digits).
    #[arg(long, value_parser = hex_array::<48>)]
    mrtd: Option<[u8; 48]>,
    /// RTMR0 of the fake quote (96 hex digits).
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr0: Option<[u8; 48]>,
    /// RTMR1 of the fake quote.
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr1: Option<[u8; 48]>,
    /// RTMR2 of the fake quote.
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr2: Option<[u8; 48]>,
    /// RTMR3 of the fake quote.
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr3: Option<[u8; 48]>,
    /// Validity in seconds (default one day).
    #[arg(long, default_value_t = cert::DEFAULT_VALIDITY_SECS)]
    validity_secs: u64,
}

/// How to judge a peer's certificate.
#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// any | fake_tdx | tdx.
    #[arg(long, default_value = "fake_tdx")]
    policy: PolicyKind,
    /// Accept only these image hashes (64 hex digits; repeatable).
    #[arg(long = "allow-image-hash", value_parser = hex_array::<32>)]
    allow_image_hash: Vec<[u8; 32]>,
    /// Accept only these MRTDs (96 hex digits; repeatable).
    #[arg(long = "allow-mrtd", value_parser = hex_array::<48>)]
    allow_mrtd: Vec<[u8; 48]>,
    /// Accept only these Intel root key ids (96 hex digits; repeatable).
    #[arg(long = "allow-root-key-id", value_parser = hex_array::<48>)]
    allow_root_key_id: Vec<[u8; 48]>,
    /// DCAP collateral (JSON) for real TDX quotes.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Judge as of this unix time instead of now.
    #[arg(long)]
    now: Option<u64>,
}

impl PolicyArgs {
    fn verifier(&self) -> Result<Verifier> {
        let collateral = match &self.collateral {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read collateral {}", path.display()))?;
                Some(dcap::parse_collateral(&text).with_context(|| path.display().to_string())?)
            }
        };
        let policy = Policy {
            allowed_image_hashes: self.allow_image_hash.clone(),
            allowed_mrtd: self.allow_mrtd.clone(),
            allowed_root_key_ids: self.allow_root_key_id.clone(),
            collateral,
            ..Policy::new(self.policy)
        };
        Ok(match self.now {
            Some(now) => Verifier::at_time(policy, now),
            None => Verifier::new(policy),
        })
    }
}

/// Arguments of `verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The certificate (PEM).
    cert: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// This side's certificate for `serve` and `connect`.
#[derive(Args, Clone)]
pub struct IdentityArgs {
    /// Certificate (PEM); without it a fresh fake-TDX one is made.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

impl IdentityArgs {
    fn load(&self, default_name: &str) -> Result<RaTlsCert> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(RaTlsCert::load_pem(c, k)?),
            _ => {
                let opts = CertOptions::new(default_name, cocoon_tee::unix_now());
                Ok(cert::generate_new(&FakeTdxProvider::default(), &opts)?.0)
            }
        }
    }
}

/// Arguments of `serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is
    /// printed first).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Proof-of-work difficulty asked of clients, in bits.
    #[arg(long, default_value_t = pow::DEFAULT_SERVER_DIFFICULTY)]
    pow_difficulty: u32,
    /// Exit after the first connection (status 1 if it failed).
    #[arg(long)]
    once: bool,
}

/// Arguments of `connect`.
#[derive(Args)]
pub struct ConnectArgs {
    /// The server's address.
    addr: SocketAddr,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Refuse to solve proofs of work above this many bits.
    #[arg(long, default_value_t = pow::DEFAULT_CLIENT_MAX_DIFFICULTY)]
    max_pow_difficulty: u32,
}

/// Runs one `attest` subcommand.
pub fn run(cmd: AttestCommand) -> Result<()> {
    match cmd {
        AttestCommand::GenCert(args) => gen_cert(args),
        AttestCommand::Inspect { cert, json } => inspect(cert, json),
        AttestCommand::Verify(args) => verify(args),
        AttestCommand::Serve(args) => tokio::runtime::Runtime::new()?.block_on(serve(args)),
        AttestCommand::Connect(args) => tokio::runtime::Runtime::new()?.block_on(connect(args)),
        AttestCommand::Demo => demo(),
    }
}

fn hex_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "expected {} hex digits ({N} bytes), got {} bytes",
            2 * N,
            b.len()
        )
    })
}

fn gen_cert(args: GenCertArgs) -> Result<()> {
    let fake = FakeTdxProvider {
        measurements: Measurements {
            mr_td: args.mrtd.unwrap_or([0; 48]),
            rtmr: [
                args.rtmr0.unwrap_or([0; 48]),
                args.rtmr1.unwrap_or([0; 48]),
                args.rtmr2.unwrap_or([0; 48]),
                args.rtmr3.unwrap_or([0; 48]),
            ],
            ..Measurements::default()
        },
    };
    let tdx = ConfigfsTsmProvider::default();
    let provider: &dyn QuoteProvider = match args.tee {
        Tee::Fake => &fake,
        Tee::Tdx => {
            let chosen = [args.rtmr0, args.rtmr1, args.rtmr2, args.rtmr3];
            if args.mrtd.is_some() || chosen.iter().any(Option::is_some) {
                bail!("--mrtd and --rtmrN choose a fake quote's measurements; a real TDX quote measures itself");
            }
            &tdx
        }
    };
    let opts = CertOptions {
        validity_secs: args.validity_secs,
        ..CertOptions::new(&args.name, cocoon_tee::unix_now())
    };
    let (cert, claims) = cert::generate_new(provider, &opts)?;
    let (cert_path, key_path) = cert
        .write_pem(&args.out, &args.name)
        .with_context(|| format!("cannot write to {}", args.out.display()))?;
    let quote = TdxQuote::parse(
        &cert::parse_cert(&cert.cert_der)?
            .quote_raw
            .unwrap_or_default(),
    )?;
    println!("wrote {}", cert_path.display());
    println!("wrote {}", key_path.display());
    println!("quote:      {}", provider.name());
    println!("public key: {}", hex::encode(claims.public_key));
    println!("image hash: {}", hex::encode(quote.image_hash()));
    Ok(())
}

fn inspect(path: PathBuf, as_json: bool) -> Result<()> {
    let der = cert::read_cert_pem(&path)?;
    let parsed = cert::parse_cert(&der)
        .with_context(|| format!("{} is not a valid RA-TLS certificate", path.display()))?;
    let quote = match &parsed.quote_raw {
        Some(raw) => Some(TdxQuote::parse(raw)?),
        None => None,
    };
    let bound = parsed.quote_raw.as_ref().map(|_| {
        quote.as_ref().map(|q| q.report_data) == Some(cert::report_data_for(&parsed.claims_raw))
    });
    let value = json!({
        "public_key": hex::encode(parsed.public_key),
        "not_before": parsed.not_before,
        "not_after": parsed.not_after,
        "not_before_utc": utc(parsed.not_before),
        "not_after_utc": utc(parsed.not_after),
        "claims": claims_json(&parsed.claims),
        "quote": quote.as_ref().map(|q| json!({
            "fake": q.is_fake(),
            "debug": q.is_debug(),
            "bound_to_claims": bound,
            "image_hash": hex::encode(q.image_hash()),
            "measurements": measurements_json(&q.measurements),
        })),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("certificate {}", path.display());
    println!("  public key:   {}", hex::encode(parsed.public_key));
    println!(
        "  valid:        {} .. {}",
        utc(parsed.not_before),
        utc(parsed.not_after)
    );
    print_claims(&parsed.claims);
    match &quote {
        None => println!("  quote:        none"),
        Some(q) => {
            let kind = if q.is_fake() {
                "FAKE TDX (not signed by Intel)"
            } else {
                "TDX (Intel-signed; use `verify --policy tdx` to check)"
            };
            println!("  quote:        {kind}");
            println!(
                "  bound:        {}",
                if bound == Some(true) {
                    "yes (report_data = SHA-512 of the claims)"
                } else {
                    "NO: the quote was made for other claims"
                }
            );
            println!("  image hash:   {}", hex::encode(q.image_hash()));
            print_measurements(&q.measurements);
        }
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let der = cert::read_cert_pem(&args.cert)?;
    let verifier = args.policy.verifier()?;
    let identity = verifier.verify_cert(&der).with_context(|| {
        format!(
            "{} refused under policy {}",
            args.cert.display(),
            args.policy.policy
        )
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&identity_json(&identity, args.policy.policy))?
        );
    } else {
        print_identity("accepted", &identity, args.policy.policy);
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let own = args.identity.load("serve")?;
    let verifier = Arc::new(args.policy.verifier()?);
    let tls = Arc::new(cocoon_tee::tls::server_config(&own, verifier.clone())?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (tcp, from) = listener.accept().await?;
        let task = handle_client(
            tcp,
            tls.clone(),
            verifier.clone(),
            args.pow_difficulty,
            args.policy.policy,
        );
        if args.once {
            return task
                .await
                .with_context(|| format!("connection from {from} failed"));
        }
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("connection from {from} failed: {e:#}");
            }
        });
    }
}

async fn handle_client(
    tcp: tokio::net::TcpStream,
    tls: Arc<cocoon_tee::rustls::ServerConfig>,
    verifier: Arc<Verifier>,
    difficulty: u32,
    policy: PolicyKind,
) -> Result<()> {
    let mut conn = cocoon_net::accept(
        tcp,
        tls,
        &verifier,
        difficulty,
        cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
    )
    .await?;
    print_identity(
        &format!(
            "client {} attested",
            conn.peer_addr().map(|a| a.to_string()).unwrap_or_default()
        ),
        conn.peer(),
        policy,
    );
    while let Some(packet) = conn.recv().await? {
        match packet {
            TcpPacket::Ping { id } => conn.send(&TcpPacket::Pong { id }).await?,
            other => eprintln!("ignoring unexpected packet {other:?}"),
        }
    }
    println!("client disconnected");
    Ok(())
}

async fn connect(args: ConnectArgs) -> Result<()> {
    let own = args.identity.load("connect")?;
    let verifier = Arc::new(args.policy.verifier()?);
    let tls = Arc::new(cocoon_tee::tls::client_config(&own, verifier.clone())?);
    let started = Instant::now();
    let mut conn = cocoon_net::connect(
        args.addr,
        tls,
        &verifier,
        args.max_pow_difficulty,
        cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
    )
    .await
    .with_context(|| format!("cannot connect to {}", args.addr))?;
    let handshake = started.elapsed();
    print_identity(
        &format!("server {} attested", args.addr),
        conn.peer(),
        args.policy.policy,
    );
    let sent = Instant::now();
    conn.send(&TcpPacket::Ping { id: 1 }).await?;
    match tokio::time::timeout(Duration::from_secs(10), conn.recv()).await {
        Ok(Ok(Some(TcpPacket::Pong { id: 1 }))) => {}
        Ok(other) => bail!("expected pong 1, got {other:?}"),
        Err(_) => bail!("no pong within 10 s"),
    }
    println!(
        "handshake (PoW + mutual RA-TLS) {:.1} ms, ping/pong {:.2} ms",
        handshake.as_secs_f64() * 1e3,
        sent.elapsed().as_secs_f64() * 1e3
    );
    conn.close().await?;
    Ok(())
}

fn demo() -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cocoon binary")?;
    println!("$ cocoon attest serve --listen 127.0.0.1:0 --once --pow-difficulty 16");
    let mut child = Command::new(&exe)
        .args([
            "attest",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--once",
            "--pow-difficulty",
            "16",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the serve process")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let first = lines.next().context("serve printed nothing")??;
    println!("[serve] {first}");
    let addr = first
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from serve: {first}"))?
        .to_string();
    println!("$ cocoon attest connect {addr}");
    let status = Command::new(&exe)
        .args(["attest", "connect", &addr])
        .status()
        .context("cannot start the connect process")?;
    for line in lines {
        println!("[serve] {}", line?);
    }
    let served = child.wait()?;
    if !status.success() || !served.success() {
        bail!("demo failed (connect: {status}, serve: {served})");
    }
    println!("demo ok: both processes verified each other's fake-TDX attestation");
    Ok(())
}

fn utc(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn claims_json(c: &Claims) -> serde_json::Value {
    json!({
        "public_key": hex::encode(c.public_key),
        "reference_form": c.is_key_only(),
        "name": c.name,
        "created_at": c.created_at,
        "x25519_key": c.x25519_key.map(hex::encode),
        "gpu_evidence_bytes": c.gpu_evidence.as_ref().map(|g| g.len()),
        "unknown_tags": c.unknown.iter().map(|u| u.0).collect::<Vec<_>>(),
    })
}

fn measurements_json(m: &Measurements) -> serde_json::Value {
    json!({
        "mrtd": hex::encode(m.mr_td),
        "mr_config_id": hex::encode(m.mr_config_id),
        "mr_owner": hex::encode(m.mr_owner),
        "mr_owner_config": hex::encode(m.mr_owner_config),
        "rtmr0": hex::encode(m.rtmr[0]),
        "rtmr1": hex::encode(m.rtmr[1]),
        "rtmr2": hex::encode(m.rtmr[2]),
        "rtmr3": hex::encode(m.rtmr[3]),
    })
}

fn identity_json(id: &PeerIdentity, policy: PolicyKind) -> serde_json::Value {
    json!({
        "accepted": true,
        "policy": policy.to_string(),
        "tee": id.tee.to_string(),
        "public_key": hex::encode(id.public_key),
        "image_hash": id.image_hash.map(hex::encode),
        "measurements": id.measurements.as_ref().map(measurements_json),
        "claims": claims_json(&id.claims),
        "not_before": id.not_before,
        "not_after": id.not_after,
        "tcb_status": id.tcb_status,
        "root_key_id": id.root_key_id.map(hex::encode),
    })
}

fn print_claims(c: &Claims) {
    if c.is_key_only() {
        println!("  claims:       the bare key (COCOON's form)");
    }
    if let Some(n) = &c.name {
        println!("  name:         {n}");
    }
    if let Some(t) = c.created_at {
        println!("  created:      {}", utc(t));
    }
}

fn print_measurements(m: &Measurements) {
    println!("  mrtd:         {}", hex::encode(m.mr_td));
    for (i, r) in m.rtmr.iter().enumerate() {
        println!("  rtmr{i}:        {}", hex::encode(r));
    }
}

fn print_identity(label: &str, id: &PeerIdentity, policy: PolicyKind) {
    println!("{label} (policy {policy}):");
    println!("  tee:          {}", id.tee);
    println!("  public key:   {}", hex::encode(id.public_key));
    if let Some(h) = id.image_hash {
        println!("  image hash:   {}", hex::encode(h));
    }
    print_claims(&id.claims);
    println!(
        "  valid:        {} .. {}",
        utc(id.not_before),
        utc(id.not_after)
    );
    if let Some(s) = &id.tcb_status {
        println!("  tcb status:   {s}");
    }
    if let Some(m) = &id.measurements {
        print_measurements(m);
    }
}
