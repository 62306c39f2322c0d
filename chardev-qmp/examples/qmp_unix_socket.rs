//! A QMP monitor on a unix socket in 30 lines: the chardev commands, fd sets, and two
//! commands of a pretend machine. Try it with `socat - UNIX-CONNECT:PATH` or `qemu.qmp`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chardev::{EventLoop, Registry};
use chardev_qmp::Qmp;
use serde_json::json;

fn main() -> Result<(), chardev::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/tmp/qmp-example.sock".into());
    let lp = EventLoop::spawn()?;
    let registry = Registry::new(lp.handle());
    chardev_socket::register(&registry);
    chardev_pty::register(&registry);
    registry.add_str(&format!("socket,id=qmp0,path={path},server=on,wait=off"))?;

    let running = Arc::new(AtomicBool::new(true));
    let (r1, r2) = (Arc::clone(&running), Arc::clone(&running));
    let qmp = Qmp::builder(&registry)
        .command("query-status", move |_| Ok(json!({"running": r1.load(Ordering::Relaxed)})))
        .command("stop", move |call| {
            r2.store(false, Ordering::Relaxed);
            call.events().emit("STOP", None);
            Ok(json!({}))
        })
        .build();
    qmp.attach("qmp0", false)?;
    eprintln!("QMP on {path}: socat - UNIX-CONNECT:{path}");
    std::thread::park(); // the loop thread serves the monitor
    lp.stop()
}
