//! `object-add` and `object-del` over a monitor on a unix socket (issue 19): TLS credentials
//! and authorization objects, QEMU's errors, and TLS socket chardevs added with
//! `chardev-add` that name them and serve a TLS client.

use chardev::Event;
use chardev_testkit::certs::{Dn, Pki};
use chardev_testkit::record;
use serde_json::{json, Value};

use crate::support::Server;

/// The port in a `disconnected:tcp:HOST:PORT,server=on` filename of chardev `id`.
fn port_of(server: &Server, id: &str) -> u16 {
    let f = server
        .registry
        .query()
        .into_iter()
        .find(|c| c.label == id)
        .unwrap_or_else(|| panic!("no chardev {id}"))
        .filename;
    let addr = f.trim_end_matches(",server=on");
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {f}"))
}

fn ok() -> Value {
    json!({"return": {}})
}

/// A TLS socket chardev's `chardev-add` arguments.
fn tls_socket(id: &str, port: u16, server: bool, tls: Value) -> Value {
    let mut data = json!({
        "addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": port.to_string()}},
        "server": server,
    });
    if server {
        data["wait"] = json!(false);
    }
    for (k, v) in tls.as_object().expect("an object") {
        data[k] = v.clone();
    }
    json!({"id": id, "backend": {"type": "socket", "data": data}})
}

#[test]
fn tls_objects_are_added_and_deleted_over_qmp_and_a_tls_chardev_added_with_them_serves() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let pki = Pki::new(&server.dir.path().join("pki"));
    let dn = Dn {
        country: Some("GB".into()),
        organization: Some("Acme, Inc.".into()),
        ..Dn::cn("client1")
    };
    let srv = pki.server_dir("server").display().to_string();
    let cli = pki.client_dir("client", &dn).display().to_string();

    let ts = json!({"qom-type": "tls-creds-x509", "id": "ts", "dir": srv, "endpoint": "server"});
    assert_eq!(c.cmd("object-add", ts.clone()), ok());
    let tc = json!({"qom-type": "tls-creds-x509", "id": "tc", "dir": cli, "endpoint": "client",
        "verify-peer": true});
    assert_eq!(c.cmd("object-add", tc), ok());
    let simple = json!({"qom-type": "authz-simple", "id": "as", "identity": dn.qemu_identity()});
    assert_eq!(c.cmd("object-add", simple), ok());
    // QEMU's example list: an exact rule that matches nobody here, a glob that lets client1 in.
    let list = json!({"qom-type": "authz-list", "id": "al", "policy": "deny", "rules": [
        {"match": "CN=nobody", "policy": "allow", "format": "exact"},
        {"match": "C=GB,*,CN=client*", "policy": "allow", "format": "glob"}]});
    assert_eq!(c.cmd("object-add", list), ok());
    let ids: Vec<String> = server.registry.objects().iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids, ["al", "as", "tc", "ts"]);

    // Errors: QEMU's text for a duplicate id; why psk and anon are refused; the missing dir.
    let e = c.error("object-add", ts, &[]);
    assert_eq!(e, "attempt to add duplicate property 'ts' to object (type 'container')");
    let e = c.error("object-add", json!({"qom-type": "authz-pam", "id": "ap"}), &[]);
    assert!(e.starts_with("invalid object type: authz-pam"), "{e}");
    let e = c.error(
        "object-add",
        json!({"qom-type": "tls-creds-psk", "id": "tp", "dir": srv, "endpoint": "server"}),
        &[],
    );
    assert!(e.contains(chardev::objects::PSK_REFUSED), "{e}");
    let e = c.error(
        "object-add",
        json!({"qom-type": "tls-creds-anon", "id": "ta", "endpoint": "server"}),
        &[],
    );
    assert!(e.contains(chardev::objects::ANON_REFUSED), "{e}");
    let missing = server.dir.path().join("nonexistent");
    let e = c.error(
        "object-add",
        json!({"qom-type": "tls-creds-x509", "id": "tm", "dir": missing, "endpoint": "server"}),
        &[],
    );
    assert!(e.contains(&missing.display().to_string()) && e.contains("No such file"), "{e}");
    let e = c.error(
        "object-add",
        json!({"qom-type": "authz-list", "id": "ab", "rules": [
        {"match": "x", "policy": "allow", "format": "regex"}]}),
        &[],
    );
    assert!(e.contains("regex"), "{e}");
    let ids: Vec<String> = server.registry.objects().iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids, ["al", "as", "tc", "ts"], "an object was added by a failed object-add");

    // chardev-add: a TLS server with the list, a TLS client to it.
    let add = tls_socket("tsrv", 0, true, json!({"tls-creds": "ts", "tls-authz": "al"}));
    assert_eq!(c.cmd("chardev-add", add), ok());
    let port = port_of(&server, "tsrv");
    let srv_h = server.registry.connect("tsrv").expect("claim the server");
    let srv_rec = record(&srv_h, 4096);
    assert_eq!(
        c.cmd("chardev-add", tls_socket("tcli", port, false, json!({"tls-creds": "tc"}))),
        ok()
    );
    let cli_h = server.registry.connect("tcli").expect("claim the client");
    let cli_rec = record(&cli_h, 4096);
    srv_rec.expect_event(Event::Opened);
    cli_rec.expect_event(Event::Opened);
    srv_h.write_all(b"over TLS\n").expect("write");
    assert_eq!(cli_rec.data(9), b"over TLS\n");
    cli_h.write_all(b"and back\n").expect("write");
    assert_eq!(srv_rec.data(9), b"and back\n");

    // tls-authz without tls-creds: QEMU's text.
    let e = c.error("chardev-add", tls_socket("tnone", 0, true, json!({"tls-authz": "al"})), &[]);
    assert_eq!(e, "Failed to add chardev 'tnone': 'tls_authz' option requires 'tls_creds' option");

    // object-del of objects in use succeeds; the chardevs keep serving.
    for id in ["al", "as", "ts", "tc"] {
        assert_eq!(c.cmd("object-del", json!({"id": id})), ok(), "object-del {id}");
    }
    assert!(server.registry.objects().is_empty());
    let e = c.error("object-del", json!({"id": "ts"}), &[]);
    assert!(e.contains("'ts' not found"), "{e}");
    srv_h.write_all(b"still\n").expect("write");
    assert_eq!(cli_rec.data(6), b"still\n");
    // The client goes; the server (its creds deleted) takes the next one, made from
    // client creds added again.
    drop(cli_h);
    assert_eq!(c.cmd("chardev-remove", json!({"id": "tcli"})), ok());
    srv_rec.expect_event(Event::Closed);
    let tc2 = json!({"qom-type": "tls-creds-x509", "id": "tc2", "dir": cli, "endpoint": "client"});
    assert_eq!(c.cmd("object-add", tc2), ok());
    assert_eq!(
        c.cmd("chardev-add", tls_socket("tcli2", port, false, json!({"tls-creds": "tc2"}))),
        ok()
    );
    let cli2 = server.registry.connect("tcli2").expect("claim");
    let cli2_rec = record(&cli2, 4096);
    srv_rec.expect_event(Event::Opened);
    cli2_rec.expect_event(Event::Opened);
    // A new chardev cannot name the deleted creds.
    let e = c.error("chardev-add", tls_socket("tgone", 0, true, json!({"tls-creds": "ts"})), &[]);
    assert!(
        e.starts_with("Failed to add chardev 'tgone': ")
            && e.contains("No TLS credentials with id 'ts'"),
        "{e}"
    );
}
