//! TLS for socket chardevs, on rustls: QEMU's `tls-creds-x509` directories loaded into
//! rustls configurations, and a session that runs over the chardev's own non-blocking
//! socket on the loop (the handshake resumes on readiness and never blocks the loop).
//!
//! What QEMU checks with GnuTLS is checked here too: the files of the directory (named in
//! every error, the private key's content never shown), the certificates' validity times
//! when they are loaded, the peer's chain against `ca-cert.pem` (and `ca-crl.pem` if there
//! is one), the server's name (`host=` or `tls-hostname=`), and `tls-authz` against the
//! client certificate's distinguished name in GnuTLS's RFC 4514 form.
//!
//! Certificates are read when an object is added (so that `-object` and `object-add` fail
//! on bad files, as QEMU's do) and again when a chardev that names it is created, never per
//! connection: a connection only clones an `Arc` of the loaded configuration.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chardev::error::{Error, Result};
use chardev::fd;
use chardev::objects::{Authz, Endpoint, Object, ObjectSpec, TlsCredsX509};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::websocket::Step;

/// Plaintext and records rustls may hold for one connection before a write waits (QEMU's
/// flow control: a peer that does not read slows the frontend).
const BUFFER_LIMIT: usize = 64 * 1024;

/// QEMU's file names in a credentials directory.
pub const CA_CERT: &str = "ca-cert.pem";
/// Revoked certificates (optional).
pub const CA_CRL: &str = "ca-crl.pem";
/// A server's certificate chain.
pub const SERVER_CERT: &str = "server-cert.pem";
/// A server's private key.
pub const SERVER_KEY: &str = "server-key.pem";
/// A client's certificate chain (optional unless the server verifies clients).
pub const CLIENT_CERT: &str = "client-cert.pem";
/// A client's private key.
pub const CLIENT_KEY: &str = "client-key.pem";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Credentials loaded for one side.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// A server's configuration.
    Server(Arc<ServerConfig>),
    /// A client's configuration.
    Client(Arc<ClientConfig>),
}

/// The check `chardev-socket` registers for `tls-creds-x509` objects: the files load.
pub fn check_object(object: &Object) -> Result<()> {
    match &object.spec {
        ObjectSpec::TlsCredsX509(creds) => load(creds).map(drop),
        _ => Ok(()),
    }
}

/// Reads a credentials directory for its endpoint: every file QEMU would read, with errors
/// that name the object's key (`dir`) and the file.
pub fn load(creds: &TlsCredsX509) -> Result<Loaded> {
    let dir = &creds.dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::option("dir", &dir.display().to_string(), "is not a directory"))
        }
        // An option error of `dir`, as every other problem with the directory is: it names
        // the key (and, once a chardev loads it, `tls-creds`), not only the path.
        Err(e) => {
            return Err(Error::option(
                "dir",
                &dir.display().to_string(),
                format!("Unable to access credentials directory: {e}"),
            ))
        }
    }
    let roots = Arc::new(root_store(dir)?);
    let crls = crls(dir)?;
    let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let tls_error = |file: &str, e: rustls::Error| {
        Error::option("dir", &dir.join(file).display().to_string(), tls_text(&e))
    };
    match creds.endpoint {
        Endpoint::Server => {
            let chain = cert_chain(dir, SERVER_CERT)?;
            let key = private_key(dir, SERVER_KEY)?;
            let builder = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| tls_error(SERVER_CERT, e))?;
            let builder = if creds.verify_peer {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .with_crls(crls)
                    .build()
                    .map_err(|e| bad_file(&dir.join(CA_CERT), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            let config = builder
                .with_single_cert(chain, key)
                .map_err(|e| key_error(dir, SERVER_KEY, SERVER_CERT, &e))?;
            Ok(Loaded::Server(Arc::new(config)))
        }
        Endpoint::Client => {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| tls_error(CA_CERT, e))?;
            let builder = if creds.verify_peer {
                let verifier =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                        .with_crls(crls)
                        .build()
                        .map_err(|e| bad_file(&dir.join(CA_CERT), e.to_string()))?;
                builder.with_webpki_verifier(verifier)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider())))
            };
            // A client certificate is optional: a server with verify-peer=off needs none.
            let config = if dir.join(CLIENT_CERT).exists() || dir.join(CLIENT_KEY).exists() {
                let chain = cert_chain(dir, CLIENT_CERT)?;
                let key = private_key(dir, CLIENT_KEY)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| key_error(dir, CLIENT_KEY, CLIENT_CERT, &e))?
            } else {
                builder.with_no_client_auth()
            };
            Ok(Loaded::Client(Arc::new(config)))
        }
    }
}

/// rustls's error text, without anything of a key's content (it never includes any).
fn tls_text(e: &rustls::Error) -> String {
    e.to_string()
}

/// A key that does not fit its certificate (or cannot be used): names both files.
fn key_error(dir: &Path, key: &str, cert: &str, e: &rustls::Error) -> Error {
    let why = match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("the private key does not match the certificate {}", dir.join(cert).display())
        }
        other => format!("cannot be used with {}: {}", dir.join(cert).display(), tls_text(other)),
    };
    Error::option("dir", &dir.join(key).display().to_string(), why)
}

/// Reads a PEM file of the directory: missing and unreadable files are named.
fn read_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        // QEMU's words ("Unable to access credentials FILE: ..."), as an error of `dir`.
        Err(e) => Err(bad_file(&path, format!("Unable to access credentials file: {e}"))),
    }
}

fn bad_file(path: &Path, why: impl Into<String>) -> Error {
    Error::option("dir", &path.display().to_string(), why)
}

/// The certificates of one PEM file, each within its validity times now (QEMU's sanity
/// check: an expired or not yet active certificate is refused when it is loaded).
fn certificates(dir: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>> {
    let (path, bytes) = read_file(dir, name)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad_file(&path, format!("is not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad_file(&path, "holds no certificate (no BEGIN CERTIFICATE block)"));
    }
    for cert in &certs {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
            bad_file(&path, format!("holds a certificate that cannot be read: {e}"))
        })?;
        let validity = parsed.validity();
        let now = x509_parser::time::ASN1Time::now();
        if validity.not_after < now {
            return Err(bad_file(
                &path,
                format!("holds a certificate that has expired (on {})", validity.not_after),
            ));
        }
        if validity.not_before > now {
            return Err(bad_file(
                &path,
                format!(
                    "holds a certificate that is not yet active (from {})",
                    validity.not_before
                ),
            ));
        }
    }
    Ok(certs)
}

fn cert_chain(dir: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>> {
    certificates(dir, name)
}

/// A private key: its errors say what is wrong with the file, never what it holds.
fn private_key(dir: &Path, name: &str) -> Result<PrivateKeyDer<'static>> {
    let (path, bytes) = read_file(dir, name)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no private key (no BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY \
                 block; encrypted keys are not supported)"
                    .to_string()
            }
            _ => "is not a valid PEM private key".to_string(),
        };
        bad_file(&path, why)
    })?;
    Ok(match key {
        PrivateKeyDer::Sec1(sec1) => match sec1_without_leading_zero(sec1.secret_sec1_der()) {
            Some(fixed) => PrivateKeyDer::Sec1(fixed.into()),
            None => PrivateKeyDer::Sec1(sec1),
        },
        other => other,
    })
}

/// The SEC 1 key normaliser that loading a credentials directory applies to every
/// `EC PRIVATE KEY`, public so that the fuzz target (`fuzz/fuzz_targets/tls_input.rs`) can
/// feed it arbitrary DER: GnuTLS's `certtool` writes an EC key's private scalar with a
/// leading zero byte when its top bit is set (33 bytes for P-256, where SEC 1 says 32), and
/// ring refuses that. Returns the same key re-encoded with the scalar at its proper length,
/// or `None` when there is nothing to fix (or the DER is not the SEC 1 shape, left for
/// rustls to refuse).
pub fn normalize_sec1_key(der: &[u8]) -> Option<Vec<u8>> {
    sec1_without_leading_zero(der)
}

/// See [`normalize_sec1_key`].
fn sec1_without_leading_zero(der: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (version_tag, version, after_version) = der_tlv(body)?;
    let (key_tag, scalar, after_key) = der_tlv(after_version)?;
    if version_tag != 0x02 || version != [1] || key_tag != 0x04 {
        return None;
    }
    // P-256, P-384: 32 and 48 bytes; one more with a zero first is GnuTLS's form.
    if !matches!(scalar.len(), 33 | 49) || scalar[0] != 0 {
        return None;
    }
    let mut inner = Vec::with_capacity(body.len());
    der_push(&mut inner, 0x02, version);
    der_push(&mut inner, 0x04, &scalar[1..]);
    inner.extend_from_slice(after_key);
    let mut out = Vec::with_capacity(inner.len() + 4);
    der_push(&mut out, 0x30, &inner);
    Some(out)
}

/// One DER element: its tag, its contents, and what follows it.
fn der_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn der_push(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

fn root_store(dir: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let path = dir.join(CA_CERT);
    for cert in certificates(dir, CA_CERT)? {
        roots
            .add(cert)
            .map_err(|e| bad_file(&path, format!("holds a CA certificate rustls refuses: {e}")))?;
    }
    Ok(roots)
}

fn crls(dir: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let path = dir.join(CA_CRL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let (path, bytes) = read_file(dir, CA_CRL)?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad_file(&path, format!("is not a valid PEM file: {e}")))?;
    if crls.is_empty() {
        return Err(bad_file(&path, "holds no CRL (no BEGIN X509 CRL block)"));
    }
    Ok(crls)
}

/// `verify-peer=off` on a client: the server's certificate is taken as it is (QEMU's
/// meaning), but its signatures over the handshake are still checked.
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a TLS socket chardev needs for each connection: settled when it is built.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    config: Loaded,
    /// Servers: who may connect (`tls-authz`), and the object's id for logs.
    authz: Option<(String, Arc<Authz>)>,
    /// Clients: the name the server's certificate must carry.
    server_name: Option<ServerName<'static>>,
}

impl TlsSetup {
    /// Loads `tls-creds` (and looks up `tls-authz`) for a chardev in role `endpoint`,
    /// connecting to `host` (clients; `tls-hostname` wins over it).
    pub fn new(
        spec: &chardev::options::TlsSpec,
        endpoint: Endpoint,
        host: Option<&str>,
        object: impl Fn(&str, &str) -> Result<Arc<Object>>,
    ) -> Result<TlsSetup> {
        let creds_object = object("tls-creds", &spec.creds)?;
        let ObjectSpec::TlsCredsX509(creds) = &creds_object.spec else {
            return Err(Error::option(
                "tls-creds",
                &spec.creds,
                format!(
                    "Object with id '{}' is not TLS credentials (it is {})",
                    spec.creds,
                    creds_object.spec.kind()
                ),
            ));
        };
        if creds.endpoint != endpoint {
            return Err(Error::option(
                "tls-creds",
                &spec.creds,
                format!(
                    "Expected TLS credentials for a {} endpoint (the object's endpoint is {})",
                    endpoint.as_str(),
                    creds.endpoint.as_str()
                ),
            ));
        }
        let authz = match &spec.authz {
            None => None,
            Some(id) => {
                let o = object("tls-authz", id)?;
                match &o.spec {
                    ObjectSpec::Authz(a) => Some((id.clone(), Arc::new(a.clone()))),
                    other => {
                        return Err(Error::option(
                            "tls-authz",
                            id,
                            format!(
                                "Object with id '{id}' is not an authorization object (it is {})",
                                other.kind()
                            ),
                        ))
                    }
                }
            }
        };
        let server_name = match endpoint {
            Endpoint::Server => None,
            Endpoint::Client => {
                let (key, name) = match (&spec.hostname, host) {
                    (Some(name), _) => ("tls-hostname", name.as_str()),
                    (None, Some(host)) if !host.is_empty() => ("host", host),
                    _ => {
                        return Err(Error::option(
                            "tls-hostname",
                            "",
                            "a TLS client needs the name to check the server's certificate \
                             against: give tls-hostname= (a unix socket has no host)",
                        ))
                    }
                };
                // `[::1]` as written in an address: the certificate holds the bare address.
                let bare = name.trim_start_matches('[').trim_end_matches(']');
                Some(ServerName::try_from(bare.to_string()).map_err(|_| {
                    Error::option(key, name, "is not a valid DNS name or IP address for TLS")
                })?)
            }
        };
        let config = load(creds).map_err(|e| match e {
            Error::Option { key, value, reason } if key == "dir" => {
                Error::option("tls-creds", &spec.creds, format!("{value}: {reason}"))
            }
            other => other,
        })?;
        Ok(TlsSetup { config, authz, server_name })
    }

    /// A new session for one connection.
    pub fn session(&self) -> io::Result<TlsSession> {
        let mut conn: rustls::Connection = match &self.config {
            Loaded::Server(config) => {
                rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?.into()
            }
            Loaded::Client(config) => {
                let name = self
                    .server_name
                    .clone()
                    .ok_or_else(|| io::Error::other("a TLS client has no server name"))?;
                rustls::ClientConnection::new(config.clone(), name)
                    .map_err(io::Error::other)?
                    .into()
            }
        };
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsSession { conn, authz: self.authz.clone(), peer: None, open: false })
    }
}

/// The socket as rustls reads and writes records: recv(2), and send(2) with
/// `MSG_NOSIGNAL` so that a vanished peer never raises SIGPIPE.
struct FdIo<'a>(BorrowedFd<'a>);

impl Read for FdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut none = Vec::new();
        fd::recv_with_fds(self.0, buf, &mut none).map(|r| r.bytes)
    }
}

impl Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fd::send_with_fds(self.0, buf, &[])
    }

    /// rustls hands over every record that waits at once: they go in one `sendmsg`. With
    /// the default `write_vectored` (the first record alone per call) a server's flight
    /// left in several small segments, and with Nagle on (`nodelay=off`, the default) the
    /// later ones waited for the client's ACK: 240 handshakes/s instead of 3,000 (P17).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        fd::send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One TLS connection over a chardev's non-blocking socket.
pub struct TlsSession {
    conn: rustls::Connection,
    authz: Option<(String, Arc<Authz>)>,
    /// The client certificate's distinguished name (servers), once the handshake is done.
    peer: Option<String>,
    open: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession").field("open", &self.open).field("peer", &self.peer).finish()
    }
}

impl TlsSession {
    /// The handshake is done (and the peer authorized): data may flow.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The peer certificate's distinguished name, in QEMU's (GnuTLS's) form.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Moves the handshake on as far as the socket allows.
    pub fn handshake(&mut self, fd: BorrowedFd<'_>) -> Step {
        loop {
            // Once the handshake is done, what is left to send (a server's session tickets)
            // does not decide it: a client that sent its Finished and went is a connection
            // that opened and ended, and the next read says so.
            match self.push(fd) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) if !self.conn.is_handshaking() => {}
                Err(e) => return Step::Failed(format!("TLS handshake failed: {e}")),
            }
            if !self.conn.is_handshaking() {
                return match self.authorize() {
                    Ok(()) => {
                        self.open = true;
                        // Session tickets, a client's Finished: out as far as they go.
                        let _ = self.push(fd);
                        Step::Open
                    }
                    Err(why) => {
                        self.close(fd);
                        Step::Failed(why)
                    }
                };
            }
            match self.conn.read_tls(&mut FdIo(fd)) {
                Ok(0) => {
                    return Step::Failed(
                        "TLS handshake failed: the peer closed the connection".into(),
                    )
                }
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // The alert rustls queued tells the peer why.
                        let _ = self.push(fd);
                        return Step::Failed(format!("TLS handshake failed: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Failed(format!("TLS handshake failed: {e}")),
            }
        }
    }

    /// Reads the peer's name and checks it against `tls-authz` (servers).
    fn authorize(&mut self) -> std::result::Result<(), String> {
        if let Some(der) = self.conn.peer_certificates().and_then(|c| c.first()) {
            self.peer = distinguished_name(der);
        }
        let Some((id, authz)) = &self.authz else { return Ok(()) };
        match &self.peer {
            Some(dn) if authz.allows(dn) => Ok(()),
            Some(dn) => Err(format!("TLS client '{dn}' is not authorized by '{id}'")),
            None => Err(format!(
                "TLS client sent no certificate to check against '{id}' (verify-peer=off?)"
            )),
        }
    }

    /// Plaintext from the peer: `Ok(0)` at its end (with or without close_notify),
    /// `WouldBlock` when the socket has no more for now.
    pub fn read(&mut self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: the end, as for a plain socket.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut FdIo(fd)) {
                Ok(0) => {
                    // Let the reader report the end on the next turn.
                    self.conn.process_new_packets().map_err(io::Error::other)?;
                    match self.conn.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) => return Err(e),
                    }
                }
                Ok(_) => {
                    let processed = self.conn.process_new_packets();
                    // Alerts and key updates go out with whatever else waits.
                    match self.push(fd) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if processed.is_ok() => return Err(e),
                        Err(_) => {}
                    }
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes plaintext for the peer: what rustls accepts (at most 64 KiB waiting),
    /// sent as far as the socket takes it. `WouldBlock` when nothing more fits yet.
    pub fn write(&mut self, fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        match self.push(fd) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let n = self.conn.writer().write(buf)?;
        match self.push(fd) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Sends the records that wait; `WouldBlock` while some are still unsent.
    pub fn push(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut FdIo(fd)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether records wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Says goodbye (close_notify), as far as the socket takes it at once.
    pub fn close(&mut self, fd: BorrowedFd<'_>) {
        self.conn.send_close_notify();
        let _ = self.push(fd);
    }
}

/// The subject of a DER certificate as QEMU 7.2 checks `tls-authz` against it (GnuTLS's
/// `gnutls_x509_crt_get_dn`): the RDNs **in the certificate's order** (usually `C=` first,
/// `CN=` last: the reverse of what `certtool -i` shows as Subject), `,` between RDNs and `+`
/// inside one, GnuTLS's short names, values escaped as RFC 4514 says (`O=Acme\, Inc.`).
/// `openssl x509 -noout -subject -nameopt esc_2253,sep_comma_plus,utf8,-esc_msb` prints
/// the same string.
pub fn distinguished_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let value = match atv.as_str() {
                Ok(text) => escape_dn_value(text),
                // Not a string type: `#` and the DER of the value in hex, as RFC 4514 says.
                Err(_) => format!("#{}", hex(atv.attr_value().data)),
            };
            let name = short_name(&oid).map(str::to_string).unwrap_or(oid);
            parts.push(format!("{name}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    Some(rdns.join(","))
}

/// GnuTLS's names for the attribute types it knows (lib/x509/common.c's table).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.4" => "surName",
        "2.5.4.42" => "givenName",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.5" => "serialNumber",
        "2.5.4.17" => "postalCode",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "EMAIL",
        _ => return None,
    })
}

/// RFC 4514's escaping: `,+"\<>;` anywhere, `#` or a space first, a space last.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_dn_value("Example, Inc."), "Example\\, Inc.");
        assert_eq!(escape_dn_value("#1 "), "\\#1\\ ");
        assert_eq!(escape_dn_value("a+b;c"), "a\\+b\\;c");
        assert_eq!(escape_dn_value("plain"), "plain");
    }
}
