//! Certificates for the TLS tests, made with GnuTLS's `certtool` in the directory layout
//! QEMU's `tls-creds-x509` object reads (`dir=`): `ca-cert.pem`, `server-cert.pem`,
//! `server-key.pem` for a server; `ca-cert.pem`, `client-cert.pem`, `client-key.pem` for a
//! client; `ca-crl.pem` where a server refuses revoked clients.
//!
//! A [`Pki`] is one test's certificate authority (and a second, unrelated one for the
//! refusal tests) under a directory the test owns. Each method makes one credentials
//! directory and returns its path, ready for `-object tls-creds-x509,dir=PATH,...` (ours or
//! QEMU's), `gnutls-cli`, `openssl s_client` or `socat OPENSSL:`:
//!
//! - [`Pki::server_dir`]: a server certificate for `localhost`, `127.0.0.1` and `::1`;
//! - [`Pki::client_dir`]: a client certificate with the subject [`Dn`] the test chooses;
//! - for the refusals: [`Pki::other_ca_client_dir`] (signed by the other CA),
//!   [`Pki::expired_client_dir`] (valid in 2001 only), [`Pki::mismatched_server_dir`] (a key
//!   that is not the certificate's) and [`Pki::server_dir_revoking`] (a server with a CRL).
//!
//! Keys are ECDSA P-256: a whole set takes well under a second (RSA 2048 takes ~70 ms a key
//! here). QEMU 7.2 with GnuTLS 3.7, `gnutls-cli`, `openssl s_client` and Python's `ssl` accept
//! them (TLS 1.2 and 1.3), and so does rustls. Every `certtool` run is bounded by the kit's
//! [`DEADLINE`](crate::DEADLINE); a missing `certtool` fails the test at once, naming the
//! Debian package (`gnutls-bin`).
//!
//! [`Dn::qemu_identity`] is the client's name as QEMU's `tls-authz` objects see it (checked
//! against QEMU 7.2's `authz-simple`): the RDNs in the certificate's order (country first),
//! joined by `,`, a comma inside a value escaped as `\,`, which is the reverse of the order
//! `certtool -i` prints on its `Subject:` line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{output_within, require_program};

/// The arguments that make `certtool --generate-privkey` write an ECDSA P-256 key.
const KEY_TYPE: [&str; 2] = ["--key-type=ecdsa", "--curve=secp256r1"];

/// A certificate's subject: the distinguished name a client certificate carries and
/// `tls-authz` checks. Only the common name is required; `certtool` stores the others in
/// the fixed order country, state, locality, organization, unit, common name.
///
/// Values may hold letters, digits, spaces (not at either end) and `, . - _ @ ' : / ( )`;
/// [`Pki::client_dir`] refuses others (`+ " \ < > ; = #`...), whose escaping in QEMU's DN
/// format has not been checked against QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn {
    /// `C=`: a two-letter country code.
    pub country: Option<String>,
    /// `ST=`: state or province.
    pub state: Option<String>,
    /// `L=`: locality (city).
    pub locality: Option<String>,
    /// `O=`: organization.
    pub organization: Option<String>,
    /// `OU=`: organizational unit.
    pub unit: Option<String>,
    /// `CN=`: common name.
    pub common_name: String,
}

impl Dn {
    /// A DN of just a common name: `CN=name`.
    pub fn cn(name: &str) -> Dn {
        Dn { common_name: name.to_string(), ..Dn::default() }
    }

    /// The attributes present, in the order they are stored in the certificate.
    fn attributes(&self) -> Vec<(&'static str, &'static str, &str)> {
        // (QEMU/RFC 4514 short name, certtool template key, value)
        let mut out = Vec::new();
        let optional = [
            ("C", "country", &self.country),
            ("ST", "state", &self.state),
            ("L", "locality", &self.locality),
            ("O", "organization", &self.organization),
            ("OU", "unit", &self.unit),
        ];
        for (short, key, value) in optional {
            if let Some(v) = value {
                out.push((short, key, v.as_str()));
            }
        }
        out.push(("CN", "cn", self.common_name.as_str()));
        out
    }

    /// The DN as QEMU 7.2 hands it to `authz-simple` and `authz-list` (what `identity=` and
    /// a rule's `match` must equal): `C=GB,ST=London,L=London,O=Acme\, Inc.,OU=Eng,CN=client1`
    /// for a DN with every attribute set. It is not `certtool -i`'s `Subject:` line, which
    /// prints the same RDNs the other way round (CN first).
    pub fn qemu_identity(&self) -> String {
        self.attributes()
            .iter()
            .map(|(short, _, v)| format!("{short}={}", v.replace(',', "\\,")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`Dn::qemu_identity`] as written in a `-object authz-simple,identity=...` option
    /// value: QEMU's option syntax doubles every comma (`,,`), the escaped ones too
    /// (`O=Acme\,, Inc.`).
    pub fn qemu_identity_option(&self) -> String {
        self.qemu_identity().replace(',', ",,")
    }

    /// The `certtool` template lines for this subject; fails the test on a value outside
    /// the characters [`Dn`] allows.
    fn template(&self) -> String {
        let mut out = String::new();
        for (short, key, value) in self.attributes() {
            let allowed = |c: char| c.is_ascii_alphanumeric() || " ,.-_@':/()".contains(c);
            assert!(
                !value.is_empty()
                    && value.chars().all(allowed)
                    && !value.starts_with(' ')
                    && !value.ends_with(' '),
                "{short}={value:?}: the test kit's DNs allow letters, digits, inner spaces and \
                 , . - _ @ ' : / ( ) only (other characters' escaping is unchecked)"
            );
            out.push_str(&format!("{key} = \"{value}\"\n"));
        }
        out
    }
}

/// One certificate authority: its key and self-signed certificate.
#[derive(Debug, Clone)]
struct Ca {
    key: PathBuf,
    cert: PathBuf,
}

/// A test's public-key infrastructure under one directory: a CA, a second CA that nothing
/// trusts (for the "another CA" refusal), and the credentials directories made from them.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct Pki {
    root: PathBuf,
    ca: Ca,
    other: Ca,
}

impl Pki {
    /// Makes the two CAs under `dir` (created if need be; the caller owns and removes it):
    /// `dir/ca/` and `dir/other-ca/`. The credentials directories go beside them, named by
    /// the caller.
    pub fn new(dir: &Path) -> Pki {
        require_program("certtool", "gnutls-bin");
        let root = dir.to_path_buf();
        let ca = make_ca(&root.join("ca"), "chardev test CA");
        let other = make_ca(&root.join("other-ca"), "chardev other test CA");
        Pki { root, ca, other }
    }

    /// The CA certificate every good certificate chains to (the `ca-cert.pem` of every
    /// directory made here), for a client's `-CAfile`/`--x509cafile`.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca.cert.clone()
    }

    /// The other CA's certificate, which signs [`Pki::other_ca_client_dir`]'s client.
    pub fn other_ca_cert(&self) -> PathBuf {
        self.other.cert.clone()
    }

    /// A server's directory `name`: `ca-cert.pem`, `server-cert.pem` (CN `localhost`; SANs
    /// DNS `localhost`, IP `127.0.0.1` and `::1`; TLS server purpose; a year valid) and
    /// `server-key.pem`.
    pub fn server_dir(&self, name: &str) -> PathBuf {
        let dir = self.new_dir(name);
        self.leaf(&self.ca, &dir, "server", &server_template("expiration_days = 365"));
        dir
    }

    /// A client's directory `name`: `ca-cert.pem` (the CA, to verify the server),
    /// `client-cert.pem` with subject `dn` (TLS client purpose; a year valid) and
    /// `client-key.pem`. A `tls-authz` allowing it names [`Dn::qemu_identity`].
    pub fn client_dir(&self, name: &str, dn: &Dn) -> PathBuf {
        let dir = self.new_dir(name);
        self.leaf(&self.ca, &dir, "client", &client_template(dn, "expiration_days = 365"));
        dir
    }

    /// Like [`Pki::client_dir`], but the certificate is signed by the other CA: a server
    /// that verifies clients refuses it. Its `ca-cert.pem` is still the good CA, so the
    /// client itself accepts the server.
    pub fn other_ca_client_dir(&self, name: &str, dn: &Dn) -> PathBuf {
        let dir = self.new_dir(name);
        self.leaf(&self.other, &dir, "client", &client_template(dn, "expiration_days = 365"));
        dir
    }

    /// Like [`Pki::client_dir`], but the certificate was valid during 2001 only: a server
    /// that verifies clients refuses it (and QEMU refuses to load it as its own client
    /// certificate: "The client certificate ... has expired").
    pub fn expired_client_dir(&self, name: &str, dn: &Dn) -> PathBuf {
        let dir = self.new_dir(name);
        let validity =
            "activation_date = \"2001-01-01 00:00:00\"\nexpiration_date = \"2002-01-01 00:00:00\"";
        self.leaf(&self.ca, &dir, "client", &client_template(dn, validity));
        dir
    }

    /// A server's directory whose `server-key.pem` is not the key of its `server-cert.pem`
    /// (QEMU: "Cannot load certificate '…/server-cert.pem' & key '…/server-key.pem': The
    /// certificate and the given key do not match.").
    pub fn mismatched_server_dir(&self, name: &str) -> PathBuf {
        let dir = self.server_dir(name);
        generate_key(&dir.join("server-key.pem"));
        dir
    }

    /// A server's directory like [`Pki::server_dir`] plus `ca-crl.pem`, the CA's revocation
    /// list naming the client certificates of `revoked` (directories made by
    /// [`Pki::client_dir`]): a server that verifies clients refuses those.
    pub fn server_dir_revoking(&self, name: &str, revoked: &[&Path]) -> PathBuf {
        let dir = self.server_dir(name);
        let template = dir.join("crl.tmpl");
        write(&template, "crl_next_update = 365\ncrl_number = 1\n");
        let mut cmd = Command::new("certtool");
        cmd.arg("--generate-crl")
            .arg("--load-ca-privkey")
            .arg(&self.ca.key)
            .arg("--load-ca-certificate")
            .arg(&self.ca.cert)
            .arg("--template")
            .arg(&template);
        // certtool takes the revoked certificates as one file of concatenated PEMs.
        let list = dir.join("revoked.pem");
        let mut pems = String::new();
        for client in revoked {
            pems.push_str(&read(&client.join("client-cert.pem")));
        }
        write(&list, &pems);
        if !revoked.is_empty() {
            cmd.arg("--load-certificate").arg(&list);
        }
        cmd.arg("--outfile").arg(dir.join("ca-crl.pem"));
        run(&mut cmd, "certtool --generate-crl");
        for scratch in [template, list] {
            let _ = std::fs::remove_file(scratch);
        }
        dir
    }

    /// Creates the empty directory `name` under the root; fails if it exists (two
    /// directories of one test must not share a name).
    fn new_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&self.root)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.root.display()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    }

    /// Writes `ca-cert.pem` (the good CA's), `ROLE-key.pem` and `ROLE-cert.pem` signed by
    /// `issuer` from `template` into `dir`.
    fn leaf(&self, issuer: &Ca, dir: &Path, role: &str, template: &str) {
        std::fs::copy(&self.ca.cert, dir.join("ca-cert.pem"))
            .unwrap_or_else(|e| panic!("copy the CA certificate into {}: {e}", dir.display()));
        let key = dir.join(format!("{role}-key.pem"));
        let cert = dir.join(format!("{role}-cert.pem"));
        let tmpl = dir.join(format!("{role}.tmpl"));
        write(&tmpl, template);
        generate_key(&key);
        run(
            Command::new("certtool")
                .arg("--generate-certificate")
                .arg("--load-privkey")
                .arg(&key)
                .arg("--load-ca-certificate")
                .arg(&issuer.cert)
                .arg("--load-ca-privkey")
                .arg(&issuer.key)
                .arg("--template")
                .arg(&tmpl)
                .arg("--outfile")
                .arg(&cert),
            "certtool --generate-certificate",
        );
        let _ = std::fs::remove_file(tmpl);
    }
}

/// Makes a CA (key and self-signed certificate, ten years valid) in `dir`.
fn make_ca(dir: &Path, cn: &str) -> Ca {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let ca = Ca { key: dir.join("ca-key.pem"), cert: dir.join("ca-cert.pem") };
    let tmpl = dir.join("ca.tmpl");
    write(
        &tmpl,
        &format!("cn = \"{cn}\"\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 3650\n"),
    );
    generate_key(&ca.key);
    run(
        Command::new("certtool")
            .arg("--generate-self-signed")
            .arg("--load-privkey")
            .arg(&ca.key)
            .arg("--template")
            .arg(&tmpl)
            .arg("--outfile")
            .arg(&ca.cert),
        "certtool --generate-self-signed",
    );
    let _ = std::fs::remove_file(tmpl);
    ca
}

/// The template of a server certificate for loopback, with `validity` lines.
fn server_template(validity: &str) -> String {
    format!(
        "cn = \"localhost\"\ndns_name = \"localhost\"\nip_address = \"127.0.0.1\"\n\
         ip_address = \"::1\"\ntls_www_server\nsigning_key\n{validity}\n"
    )
}

/// The template of a client certificate for `dn`, with `validity` lines.
fn client_template(dn: &Dn, validity: &str) -> String {
    format!("{}tls_www_client\nsigning_key\n{validity}\n", dn.template())
}

/// Writes a new ECDSA P-256 private key to `path`.
fn generate_key(path: &Path) {
    run(
        Command::new("certtool")
            .args(["--generate-privkey"])
            .args(KEY_TYPE)
            .arg("--outfile")
            .arg(path),
        "certtool --generate-privkey",
    );
}

/// Runs a `certtool` command bounded by the kit's deadline; fails the test with its output
/// if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = output_within(cmd, what);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `certtool --verify` of `cert` against `ca` (and the revocation list `crl` if given):
    /// whether it verifies, and what certtool said.
    fn verifies(ca: &Path, cert: &Path, crl: Option<&Path>) -> (bool, String) {
        let mut cmd = Command::new("certtool");
        cmd.arg("--verify").arg("--load-ca-certificate").arg(ca).arg("--infile").arg(cert);
        if let Some(crl) = crl {
            cmd.arg("--load-crl").arg(crl);
        }
        let out = output_within(&mut cmd, "certtool --verify");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }

    /// The subject as OpenSSL prints it in certificate order with RFC 2253 escaping, which
    /// for these DNs is QEMU's format (checked against QEMU 7.2's `authz-simple`).
    fn subject_in_certificate_order(cert: &Path) -> String {
        require_program("openssl", "openssl");
        let out = output_within(
            Command::new("openssl").arg("x509").arg("-in").arg(cert).args([
                "-noout",
                "-subject",
                "-nameopt",
                "esc_2253,sep_comma_plus,utf8,-esc_msb",
            ]),
            "openssl x509 -subject",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        line.strip_prefix("subject=").unwrap_or(&line).to_string()
    }

    #[test]
    fn a_set_is_made_quickly_and_verifies_as_each_kind_should() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let started = std::time::Instant::now();
        let pki = Pki::new(tmp.path());
        let dn = Dn {
            country: Some("GB".into()),
            state: Some("London".into()),
            locality: Some("London City".into()),
            organization: Some("Acme, Inc.".into()),
            unit: Some("Eng".into()),
            common_name: "client1".into(),
        };
        let server = pki.server_dir("server");
        let client = pki.client_dir("client", &dn);
        let other = pki.other_ca_client_dir("other-ca-client", &Dn::cn("intruder"));
        let expired = pki.expired_client_dir("expired-client", &Dn::cn("late"));
        let mismatched = pki.mismatched_server_dir("mismatched");
        let revoking = pki.server_dir_revoking("revoking", &[&client]);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "the set took {took:?}");

        for (dir, files) in [
            (&server, ["ca-cert.pem", "server-cert.pem", "server-key.pem"]),
            (&client, ["ca-cert.pem", "client-cert.pem", "client-key.pem"]),
            (&mismatched, ["ca-cert.pem", "server-cert.pem", "server-key.pem"]),
        ] {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("list a credentials dir")
                .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, files, "{}", dir.display());
        }
        assert!(revoking.join("ca-crl.pem").exists());

        let ca = pki.ca_cert();
        for good in [server.join("server-cert.pem"), client.join("client-cert.pem")] {
            let (ok, said) = verifies(&ca, &good, None);
            assert!(ok, "{} should verify:\n{said}", good.display());
        }
        let (ok, said) = verifies(&ca, &other.join("client-cert.pem"), None);
        assert!(!ok, "the other CA's client verified against the CA:\n{said}");
        let (ok, said) = verifies(&pki.other_ca_cert(), &other.join("client-cert.pem"), None);
        assert!(ok, "the other CA's client should verify against the other CA:\n{said}");
        let (ok, said) = verifies(&ca, &expired.join("client-cert.pem"), None);
        assert!(!ok && said.contains("expired"), "the expired client verified:\n{said}");
        let crl = revoking.join("ca-crl.pem");
        let (ok, said) = verifies(&ca, &client.join("client-cert.pem"), Some(&crl));
        assert!(!ok && said.contains("revoked"), "the revoked client verified:\n{said}");
        let (ok, said) = verifies(&ca, &server.join("server-cert.pem"), Some(&crl));
        assert!(ok, "the CRL revoked more than the client:\n{said}");

        // The mismatched key is not the certificate's: their public keys differ.
        let pubkey = |args: &[&str], file: &Path| {
            let out = output_within(
                Command::new("certtool").args(args).arg("--infile").arg(file),
                "certtool public key",
            );
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let key_id = |text: String| {
            text.lines()
                .skip_while(|l| !l.contains("Public Key ID"))
                .map(str::trim)
                .find(|l| l.starts_with("sha256:"))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no public key ID in:\n{text}"))
        };
        let of_cert = key_id(pubkey(&["-i"], &server.join("server-cert.pem")));
        let of_key = key_id(pubkey(&["-k"], &server.join("server-key.pem")));
        assert_eq!(of_cert, of_key, "the good server's key is its certificate's");
        let bad_cert = key_id(pubkey(&["-i"], &mismatched.join("server-cert.pem")));
        let bad_key = key_id(pubkey(&["-k"], &mismatched.join("server-key.pem")));
        assert_ne!(bad_cert, bad_key, "the mismatched dir's key matches its certificate");

        assert_eq!(
            dn.qemu_identity(),
            "C=GB,ST=London,L=London City,O=Acme\\, Inc.,OU=Eng,CN=client1"
        );
        assert_eq!(
            dn.qemu_identity(),
            subject_in_certificate_order(&client.join("client-cert.pem"))
        );
        assert_eq!(
            dn.qemu_identity_option(),
            "C=GB,,ST=London,,L=London City,,O=Acme\\,, Inc.,,OU=Eng,,CN=client1"
        );
        assert_eq!(Dn::cn("late").qemu_identity(), "CN=late");
    }

    #[test]
    #[should_panic(expected = "allow letters")]
    fn a_dn_value_whose_escaping_is_unchecked_is_refused() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(tmp.path());
        pki.client_dir("c", &Dn::cn("a+b"));
    }
}
