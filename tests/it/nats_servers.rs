//! The NATS test harness itself (`support::nats`): a single JetStream server and a
//! three-server JetStream cluster get ready, a server SIGKILLed and restarted on its own store
//! dir gets ready again, and dropping the harness leaves no server running.

use crate::support::nats::NatsCluster;

#[test]
fn a_single_jetstream_server_gets_ready_and_is_gone_after_drop() {
    let Some(nats) = NatsCluster::single() else { return };
    let port = nats.servers[0].port;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(nats);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server outlived its harness");
}

#[test]
fn a_three_server_cluster_gets_ready_and_a_killed_server_restarts_on_its_store() {
    let Some(mut nats) = NatsCluster::three() else { return };
    assert_eq!(nats.urls().split(',').count(), 3);
    let store = nats.servers[1].store_dir();
    nats.kill(1);
    assert!(!nats.servers[1].is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats.servers[1].port)).is_err());
    nats.restart(1);
    assert!(nats.servers[1].is_running());
    assert_eq!(nats.servers[1].store_dir(), store);
    assert!(store.join("jetstream").exists(), "JetStream keeps its data in the server's own store dir");
}
