//! Members that talk mutual TLS, with certificates made here (rcgen): a group
//! whose members hold the CA's certificates commits; a peer without one, or
//! with one from another CA, is refused at the handshake and counted; bad
//! files fail the start naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::common::*;
use metastore_raft::transport::grpc::pb::peer_client::PeerClient;
use metastore_raft::{
    EngineKind, Error, MemberConfig, NodeConfig, Op, Outcome, StorageConfig, TlsFiles,
};

/// A CA that signs certificates for loopback members.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes a certificate for 127.0.0.1 and localhost, its key, and this
    /// CA's certificate under `dir`.
    fn files(&self, dir: &Path, name: &str) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let write = |file: &str, text: String| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, text).unwrap();
            path
        };
        TlsFiles {
            cert_file: write("cert.pem", cert.pem()),
            key_file: write("key.pem", key.serialize_pem()),
            ca_file: write("ca.pem", self.issuer.pem()),
        }
    }
}

fn member_config(id: u64, ports: &[u16], dir: &Path, tls: Option<TlsFiles>) -> MemberConfig {
    let initial_cluster: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    MemberConfig {
        node: NodeConfig {
            id,
            peers: Vec::new(),
            raft: raft_settings(),
            batch: Default::default(),
            storage: StorageConfig {
                engine: EngineKind::RocksDb,
                data_dir: dir.to_path_buf(),
                sync: false,
            },
        },
        listen: initial_cluster[&id].parse().unwrap(),
        initial_cluster,
        cluster_token: "tls-test".into(),
        advertise: None,
        tls,
        join: false,
    }
}

#[test]
fn members_with_the_groups_certificates_talk_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ports = free_ports(3);
    let members: Vec<Running> = (1..=3)
        .map(|id| {
            let tls = ca.files(dir.path(), &format!("n{id}"));
            Running::start(member_config(id, &ports, dir.path(), Some(tls))).unwrap()
        })
        .collect();
    wait_until(Duration::from_secs(10), "a leader over TLS", || {
        let l = members[0].leader();
        l != 0 && members.iter().all(|m| m.leader() == l)
    });
    // A write through a follower travels to the leader and back over TLS.
    let f = members
        .iter()
        .find(|m| m.leader() != m.member.node().id())
        .unwrap();
    for i in 0..20u64 {
        let put = Op::Put {
            key: key(i as usize),
            value: value(i as usize, 0),
        };
        assert!(matches!(f.run(put), Ok(Outcome::Written { .. })));
    }
    for (n, m) in members.iter().enumerate() {
        let got = m.run(Op::Get { key: key(19) });
        assert!(
            matches!(&got, Ok(Outcome::Value(Some(v))) if *v == value(19, 0)),
            "node {}: {got:?}",
            n + 1
        );
        let s = m.member.net_stats();
        assert!(s.connects > 0 && s.messages_received > 0, "{s:?}");
        assert_eq!(s.refused, 0, "{s:?}");
    }
    for m in &members {
        m.member.close();
    }
}

#[test]
fn a_peer_without_a_certificate_of_the_groups_ca_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ports = free_ports(3);
    let one = Running::start(member_config(
        1,
        &ports,
        dir.path(),
        Some(ca.files(dir.path(), "n1")),
    ))
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Plain HTTP/2 against a TLS port.
    let plain = rt.block_on(async {
        let mut client = PeerClient::connect(format!("http://{addr}")).await?;
        client
            .raft(tokio_stream::iter(Vec::new()))
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    assert!(plain.is_err(), "a plaintext peer was served");

    // A member of another CA: it presents a certificate the group did not sign,
    // and does not trust the group's.
    let stranger = Ca::new().files(dir.path(), "stranger");
    // Alone, neither can win an election; both campaign and dial the other.
    let cfg = member_config(2, &ports, &dir.path().join("other"), Some(stranger));
    let two = Running::start(cfg).unwrap();
    wait_until(Duration::from_secs(10), "the refusals counted", || {
        one.member.net_stats().refused >= 2 && two.member.net_stats().refused >= 1
    });
    assert_eq!(one.member.net_stats().messages_received, 0);
    assert_eq!(two.member.net_stats().messages_received, 0);
    one.member.close();
    two.member.close();
}

#[test]
fn unusable_tls_files_fail_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ports = free_ports(1);
    let good = ca.files(dir.path(), "n1");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            TlsFiles {
                cert_file: missing.clone(),
                ..good.clone()
            },
            "cluster.tls.cert_file",
        ),
        (
            TlsFiles {
                ca_file: missing,
                ..good.clone()
            },
            "cluster.tls.ca_file",
        ),
        (
            TlsFiles {
                cert_file: garbage.clone(),
                ..good.clone()
            },
            "cluster.tls",
        ),
        (
            TlsFiles {
                ca_file: garbage,
                ..good.clone()
            },
            "cluster.tls",
        ),
    ];
    for (files, expected) in cases {
        match Running::start(member_config(1, &ports, dir.path(), Some(files))) {
            Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, expected),
            Err(other) => panic!("{expected}: {other:?}"),
            Ok(_) => panic!("{expected}: started"),
        }
    }
}
