//! The web console's HTTP side, on what a browser (or anyone) sends first: no panic; a head
//! is judged the same whatever bytes follow it (the server reads more than the head at
//! times); a page request's answer is a complete HTTP/1.1 response whose Content-Length is
//! its body's; and the resize message parser never panics.
#![no_main]

use chardev_socket::web::{self, Head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = web::parse_head(data);
    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        // Bytes after a complete head never change what it is.
        if end + 4 <= web::HEAD_MAX && !matches!(head, Head::Incomplete) {
            let mut more = data[..end + 4].to_vec();
            more.extend_from_slice(b"GET /other HTTP/1.1\r\n\r\n");
            assert_eq!(web::parse_head(&more), web::parse_head(&data[..end + 4]));
        }
    }
    if data.len() >= web::HEAD_MAX {
        assert!(!matches!(head, Head::Incomplete), "a head past the limit is judged");
    }
    let answer = match &head {
        Head::Get { path, head_only } => web::respond(path, *head_only, None, "fuzz"),
        Head::Refuse { status, reason } => web::refusal(*status, reason),
        Head::Incomplete | Head::Upgrade => Vec::new(),
    };
    if !answer.is_empty() {
        assert!(answer.starts_with(b"HTTP/1.1 "));
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
        let text = String::from_utf8_lossy(&answer[..split]);
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Content-Length");
        let head_only = matches!(head, Head::Get { head_only: true, .. });
        let body = answer.len() - split - 4;
        assert!(if head_only { body == 0 } else { body == length });
    }
    let _ = web::parse_resize(&String::from_utf8_lossy(data));
});
