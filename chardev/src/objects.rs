//! Objects that chardevs name by id, as QEMU's `-object` and `object-add` make them: TLS
//! credentials (`tls-creds-x509`) and authorization lists (`authz-simple`, `authz-list`).
//!
//! The core keeps them as typed values ([`Object`], [`ObjectSpec`]) in the registry
//! ([`Registry::add_object`](crate::Registry::add_object)); it reads no certificate itself.
//! The backend that uses an object kind registers a check for it
//! ([`Registry::register_object_check`](crate::Registry::register_object_check)):
//! `chardev-socket` loads a `tls-creds-x509` directory when the object is added, so that a
//! missing file or a key that does not match its certificate is an error of `-object` or
//! `object-add`, as in QEMU, and loads it again whenever a chardev that names it is created
//! (never per connection).
//!
//! An embedder builds the same values without the option syntax:
//!
//! ```
//! use chardev::objects::{Endpoint, Object, ObjectSpec, TlsCredsX509};
//! let creds = Object {
//!     id: "tls0".into(),
//!     spec: ObjectSpec::TlsCredsX509(TlsCredsX509::new("/etc/pki/qemu", Endpoint::Server)),
//! };
//! let parsed: Object = "tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server".parse()?;
//! assert_eq!(parsed, creds);
//! # Ok::<(), chardev::Error>(())
//! ```

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::options::{parse_bool, split_options};

/// Which side of a TLS connection credentials are for (QEMU's `endpoint=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A listening chardev (`server=on`): presents `server-cert.pem`.
    Server,
    /// A connecting chardev: verifies the server, presents `client-cert.pem` if there is one.
    Client,
}

impl Endpoint {
    /// QEMU's name: `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Server => "server",
            Endpoint::Client => "client",
        }
    }
}

/// `tls-creds-x509`: a directory of PEM files in QEMU's layout.
///
/// | file | for |
/// |---|---|
/// | `ca-cert.pem` | the CA(s) the peer's certificate must chain to (always needed) |
/// | `ca-crl.pem` | revoked certificates (optional) |
/// | `server-cert.pem`, `server-key.pem` | a server's certificate chain and key |
/// | `client-cert.pem`, `client-key.pem` | a client's (optional; a server with `verify-peer=on` needs them) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCredsX509 {
    /// The directory (`dir=`).
    pub dir: PathBuf,
    /// `endpoint=`: QEMU's default is `client`.
    pub endpoint: Endpoint,
    /// `verify-peer=`: a server asks for and verifies a client certificate, a client
    /// verifies the server's. On by default, as in QEMU.
    pub verify_peer: bool,
}

impl TlsCredsX509 {
    /// Credentials in `dir` for `endpoint`, verifying the peer (QEMU's defaults).
    pub fn new(dir: impl Into<PathBuf>, endpoint: Endpoint) -> TlsCredsX509 {
        TlsCredsX509 { dir: dir.into(), endpoint, verify_peer: true }
    }
}

/// How an `authz-list` rule matches an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthzFormat {
    /// The whole identity, byte for byte (QEMU's default).
    #[default]
    Exact,
    /// A shell glob (`*`, `?`, `[...]`), as QEMU's `fnmatch(3)` without flags: `*` also
    /// matches `,` and `=`.
    Glob,
}

/// What a matching rule (or no rule) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthzPolicy {
    /// Let the client in.
    Allow,
    /// Refuse it (QEMU's default for a list).
    #[default]
    Deny,
}

/// One rule of an `authz-list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRule {
    /// `match`: the identity or the glob.
    pub pattern: String,
    /// `policy`: what a match decides.
    pub policy: AuthzPolicy,
    /// `format`: exact or glob.
    pub format: AuthzFormat,
}

/// An authorization object: who, identified by the distinguished name of the client
/// certificate, may use a TLS chardev. The name is written as QEMU 7.2 checks it: the
/// certificate's RDNs in their order, commas between them and RFC 4514 escapes, e.g.
/// `C=GB,ST=London,L=London,O=Example Org,CN=laptop.example.com` (on a command line every
/// comma is doubled: `identity=C=GB,,ST=London,,...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authz {
    /// `authz-simple,identity=DN`: exactly one identity.
    Simple {
        /// The identity allowed.
        identity: String,
    },
    /// `authz-list`: the first matching rule decides, `policy` when none matches.
    List {
        /// What happens when no rule matches.
        policy: AuthzPolicy,
        /// The rules, in order.
        rules: Vec<AuthzRule>,
    },
}

impl Authz {
    /// Whether `identity` is allowed.
    pub fn allows(&self, identity: &str) -> bool {
        match self {
            Authz::Simple { identity: allowed } => allowed == identity,
            Authz::List { policy, rules } => {
                let decided = rules.iter().find(|r| match r.format {
                    AuthzFormat::Exact => r.pattern == identity,
                    AuthzFormat::Glob => glob_match(r.pattern.as_bytes(), identity.as_bytes()),
                });
                decided.map_or(*policy, |r| r.policy) == AuthzPolicy::Allow
            }
        }
    }
}

/// `fnmatch(3)` with no flags: `*` any run of bytes, `?` one byte, `[...]` a set (`!` or `^`
/// negates, `a-z` ranges), `\` quotes the next byte.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // The classic iterative matcher: remember the last `*` and retry from there.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_set(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` set at `pattern[at]` against `c`: the position after the set if it matches.
/// An unterminated `[` is a literal `[`, as in fnmatch.
fn match_set(pattern: &[u8], at: usize, c: u8) -> Option<usize> {
    let mut i = at + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&lo) = pattern.get(i) else { return (c == b'[').then_some(at + 1) };
        if lo == b']' && !first {
            break;
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

/// What an object is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectSpec {
    /// `tls-creds-x509`.
    TlsCredsX509(TlsCredsX509),
    /// `authz-simple` or `authz-list`.
    Authz(Authz),
}

impl ObjectSpec {
    /// QEMU's type name (`qom-type`).
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectSpec::TlsCredsX509(_) => "tls-creds-x509",
            ObjectSpec::Authz(Authz::Simple { .. }) => "authz-simple",
            ObjectSpec::Authz(Authz::List { .. }) => "authz-list",
        }
    }
}

/// An object with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `id=`: what chardevs name it by (`tls-creds=ID`, `tls-authz=ID`).
    pub id: String,
    /// What it is.
    pub spec: ObjectSpec,
}

/// Why `tls-creds-psk` is refused: rustls has no external pre-shared keys.
pub const PSK_REFUSED: &str = "tls-creds-psk is not supported: rustls, the TLS library here, \
    has no pre-shared-key handshakes; use tls-creds-x509 (certtool makes a private CA and \
    certificates in a few commands, see QEMU's TLS documentation)";

/// Why `tls-creds-anon` is refused: anonymous TLS authenticates nobody.
pub const ANON_REFUSED: &str = "tls-creds-anon is not supported: anonymous TLS authenticates \
    neither side, so anyone in the path can read and change the console, and rustls has no \
    anonymous cipher suites; use tls-creds-x509 (with verify-peer=off on the server if clients \
    have no certificates)";

/// Parses a QEMU `-object` argument: `TYPE,id=ID,key=value,...`.
impl FromStr for Object {
    type Err = Error;

    fn from_str(s: &str) -> Result<Object> {
        let pairs = split_options(s, "qom-type")?;
        let mut kind = None;
        let mut props = Vec::new();
        for (key, value) in pairs {
            if key == "qom-type" {
                kind = Some(value);
            } else {
                props.push((key, value));
            }
        }
        let kind = kind.ok_or_else(|| Error::option("qom-type", "", "an object needs a type"))?;
        let mut props = Props::new(&kind, props);
        let object = Object::from_props(&kind, &mut props)?;
        props.finish()?;
        Ok(object)
    }
}

impl Object {
    /// Builds an object of type `kind` from its properties as strings (the `-object` syntax;
    /// QMP's `object-add` passes its JSON values here as their text, except lists).
    fn from_props(kind: &str, props: &mut Props) -> Result<Object> {
        let id = props.required("id")?;
        check_id(&id)?;
        let spec = match kind {
            "tls-creds-x509" => ObjectSpec::TlsCredsX509(tls_creds_x509(props)?),
            "authz-simple" => {
                ObjectSpec::Authz(Authz::Simple { identity: props.required("identity")? })
            }
            "authz-list" => {
                let policy = match props.take("policy") {
                    Some(p) => parse_policy("policy", &p)?,
                    None => AuthzPolicy::Deny,
                };
                if props.has("rules") {
                    return Err(Error::option(
                        "rules",
                        "",
                        "a list: give authz-list in JSON (-object '{\"qom-type\": \
                         \"authz-list\", ...}') or through QMP object-add",
                    ));
                }
                ObjectSpec::Authz(Authz::List { policy, rules: Vec::new() })
            }
            "tls-creds-psk" => return Err(Error::option("qom-type", kind, PSK_REFUSED)),
            "tls-creds-anon" => return Err(Error::option("qom-type", kind, ANON_REFUSED)),
            other => {
                return Err(Error::option(
                    "qom-type",
                    other,
                    format!(
                        "invalid object type: {other} (known here: tls-creds-x509, \
                         authz-simple, authz-list)"
                    ),
                ))
            }
        };
        Ok(Object { id, spec })
    }

    /// Builds an object from properties given as strings, with `rules` (an `authz-list`'s)
    /// given apart: for QMP's `object-add` and JSON `-object`, whose values are JSON.
    pub fn from_properties(
        kind: &str,
        properties: Vec<(String, String)>,
        rules: Vec<AuthzRule>,
    ) -> Result<Object> {
        let mut props = Props::new(kind, properties);
        let mut object = Object::from_props(kind, &mut props)?;
        props.finish()?;
        if let ObjectSpec::Authz(Authz::List { rules: r, .. }) = &mut object.spec {
            *r = rules;
        } else if !rules.is_empty() {
            return Err(Error::option("rules", "", format!("not a property of {kind}")));
        }
        Ok(object)
    }
}

/// An authz-list rule from its members as strings (`match`, `policy`, `format`).
pub fn authz_rule(pattern: &str, policy: &str, format: Option<&str>) -> Result<AuthzRule> {
    let format = match format {
        None | Some("exact") => AuthzFormat::Exact,
        Some("glob") => AuthzFormat::Glob,
        Some(other) => {
            return Err(Error::option("format", other, "must be 'exact' or 'glob'"));
        }
    };
    Ok(AuthzRule { pattern: pattern.to_string(), policy: parse_policy("policy", policy)?, format })
}

fn parse_policy(key: &str, value: &str) -> Result<AuthzPolicy> {
    match value {
        "allow" => Ok(AuthzPolicy::Allow),
        "deny" => Ok(AuthzPolicy::Deny),
        other => Err(Error::option(key, other, "must be 'allow' or 'deny'")),
    }
}

/// QEMU's id rule: a letter first, then letters, digits, `-`, `.`, `_`.
fn check_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::option("id", id, "Parameter 'id' expects an identifier"))
    }
}

fn tls_creds_x509(props: &mut Props) -> Result<TlsCredsX509> {
    let dir = props.required("dir")?;
    if dir.is_empty() {
        return Err(Error::option("dir", "", "must name a directory"));
    }
    let endpoint = match props.take("endpoint").as_deref() {
        None | Some("client") => Endpoint::Client,
        Some("server") => Endpoint::Server,
        Some(other) => {
            return Err(Error::option("endpoint", other, "must be 'server' or 'client'"));
        }
    };
    let verify_peer = match props.take("verify-peer") {
        Some(v) => parse_bool("verify-peer", &v)?,
        None => true,
    };
    // QEMU's other properties that change nothing here: `sanity-check` (certificates are
    // always checked when loaded), `loaded`, and `priority` (rustls has its own safe set).
    for ignored in ["sanity-check", "loaded"] {
        if let Some(v) = props.take(ignored) {
            parse_bool(ignored, &v)?;
        }
    }
    if let Some(priority) = props.take("priority") {
        return Err(Error::option(
            "priority",
            &priority,
            "GnuTLS priority strings do not apply: rustls offers TLS 1.3 and 1.2 with its \
             own safe cipher suites",
        ));
    }
    if let Some(id) = props.take("passwordid") {
        return Err(Error::option(
            "passwordid",
            &id,
            "encrypted private keys are not supported: give server-key.pem unencrypted \
             (readable by this process only)",
        ));
    }
    Ok(TlsCredsX509 { dir: PathBuf::from(dir), endpoint, verify_peer })
}

/// An object's properties, each taken once; what is left is an unknown key.
struct Props {
    kind: String,
    props: Vec<(String, String)>,
}

impl Props {
    fn new(kind: &str, props: Vec<(String, String)>) -> Props {
        Props { kind: kind.to_string(), props }
    }

    fn has(&self, key: &str) -> bool {
        self.props.iter().any(|(k, _)| k == key)
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.props.iter().position(|(k, _)| k == key)?;
        Some(self.props.remove(at).1)
    }

    fn required(&mut self, key: &str) -> Result<String> {
        self.take(key).ok_or_else(|| {
            Error::option(
                key,
                "",
                format!("Parameter '{key}' is missing (needed by {})", self.kind),
            )
        })
    }

    fn finish(self) -> Result<()> {
        match self.props.into_iter().next() {
            Some((key, value)) => Err(Error::option(
                &key,
                &value,
                format!("Property '{}.{key}' not found", self.kind),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_fnmatch_does() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("CN=*,O=Example", "CN=a,b,O=Example"));
        assert!(m("CN=laptop?", "CN=laptop1"));
        assert!(!m("CN=laptop?", "CN=laptop"));
        assert!(m("CN=[a-c]x", "CN=bx"));
        assert!(!m("CN=[!a-c]x", "CN=bx"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*", ""));
        assert!(!m("", "x"));
        assert!(m("[", "["));
    }

    #[test]
    fn a_list_takes_the_first_match_and_its_policy_otherwise() {
        let list = Authz::List {
            policy: AuthzPolicy::Deny,
            rules: vec![
                authz_rule("CN=bad,O=Example", "deny", None).unwrap(),
                authz_rule("CN=*,O=Example", "allow", Some("glob")).unwrap(),
            ],
        };
        assert!(list.allows("CN=good,O=Example"));
        assert!(!list.allows("CN=bad,O=Example"));
        assert!(!list.allows("CN=good,O=Other"));
    }

    #[test]
    fn objects_parse_with_qemu_defaults_and_name_bad_keys() {
        let o: Object = "tls-creds-x509,id=t0,dir=/d".parse().unwrap();
        assert_eq!(
            o.spec,
            ObjectSpec::TlsCredsX509(TlsCredsX509 {
                dir: "/d".into(),
                endpoint: Endpoint::Client,
                verify_peer: true
            })
        );
        let o: Object = "authz-simple,id=a0,identity=CN=x,,O=y".parse().unwrap();
        assert_eq!(o.spec, ObjectSpec::Authz(Authz::Simple { identity: "CN=x,O=y".into() }));
        let e = "tls-creds-x509,id=t0,dir=/d,endpoint=both".parse::<Object>().unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = "tls-creds-x509,id=t0,dir=/d,bogus=1".parse::<Object>().unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = "tls-creds-psk,id=p0,dir=/d".parse::<Object>().unwrap_err();
        assert!(e.to_string().contains("pre-shared"), "{e}");
        let e = "tls-creds-x509,dir=/d".parse::<Object>().unwrap_err();
        assert!(e.to_string().contains("id"), "{e}");
    }
}
