//! chardev-qmp's integration tests: a module per feature, on real unix sockets.

mod fds; // getfd, fds that belong to their input and connection
mod fdsets; // add-fd, /dev/fdset/N in file and logfile, named fds in socket addresses
mod logs; // logfile keys in chardev-add, the log-reopen command
mod objects; // object-add / object-del of TLS credentials and authz, TLS chardevs over QMP
mod prop_json; // the JSON stream and the QAPI mapping on any input
mod stuck_client; // a client that never reads
mod support; // a server in this process and a libvirt-like client
