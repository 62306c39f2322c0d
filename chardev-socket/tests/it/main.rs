//! chardev-socket's integration tests, a module per subject, in one binary: its tests run
//! side by side on the harness's threads, against real peers (socat, telnet, Python). Tests
//! that count the whole process's fds are in `tests/counted/`, and the one that needs
//! SIGPIPE at its default action in `tests/sigpipe/`. Shared helpers come from the
//! `chardev-testkit` crate, the socket set-up from `support`.

mod abstract_sockets; // abstract=on, tight=on|off, against a Python peer and std sockets
mod counters; // bytes, connections, fds, viewers dropped, writers blocked
mod examples; // the examples run as a newcomer runs them, driven by real peers
mod fd_passing; // fds from Python's socket.send_fds; the seed (passed fds arrive blocking)
mod more_sockets; // to= port ranges, an inherited fd=N, stale and live server paths
mod output_queue; // answering from callbacks through an OutputQueue: no stalls, bounded
mod permissions; // mode= on unix servers: between bind and listen, as uid 65534, failures
mod prop_telnet; // property tests of the telnet filter
mod reconnect; // reconnect-ms: idle between attempts, connects once a server appears
mod send_fds; // fds from the frontend to the peer, with the first byte only
mod socket; // socat as client and server, the telnet client, protocol corners
mod splice; // splice(2) between socket chardevs and a frontend's pipe
mod support; // a loop with the socket backends, filenames, a peer's lines
mod telnet; // telnet=on: the negotiation, IAC BREAK, against a raw Python peer
mod tls; // TLS: refusals, stalled handshakes, bad credentials, certificates per chardev, flow
mod udp; // udp: datagrams whole, only the connected peer heard
mod viewers; // clients=, history=, queue=: many viewers, history, stalled viewers, gap markers
mod websocket; // websocket=on against the Python websockets client
mod writable; // notify_writable: told once, only after room came
