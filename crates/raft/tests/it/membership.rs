//! Membership changes on members talking gRPC over loopback, each on its own
//! RocksDB: a node joins empty and catches up by snapshot, is promoted, a
//! member is removed and its id refused for good, the leader is removed
//! after handing leadership over, a joint configuration is left by a new
//! leader when the old one is lost in the middle, and bad requests are
//! refused with their codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use metastore_raft::membership::Change;
use metastore_raft::{EngineKind, MemberConfig, NodeConfig, Op, Outcome, Role, StorageConfig};

fn address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Node `id` of a group whose initial members are `initial` (id, port).
fn config(id: u64, port: u16, initial: &[(u64, u16)], dir: &Path) -> MemberConfig {
    let mut raft = raft_settings();
    raft.promote_max_lag = 8;
    MemberConfig {
        node: NodeConfig {
            id,
            peers: Vec::new(),
            raft,
            batch: Default::default(),
            storage: StorageConfig {
                engine: EngineKind::RocksDb,
                data_dir: dir.to_path_buf(),
                sync: false,
            },
        },
        listen: address(port).parse().unwrap(),
        initial_cluster: initial.iter().map(|(i, p)| (*i, address(*p))).collect(),
        cluster_token: "membership-test".into(),
        advertise: Some(address(port)),
        tls: None,
        join: false,
    }
}

fn joiner(id: u64, port: u16, dir: &Path) -> MemberConfig {
    MemberConfig {
        join: true,
        initial_cluster: BTreeMap::new(),
        ..config(id, port, &[], dir)
    }
}

/// A group of three on fresh ports, with a leader.
struct Group {
    nodes: BTreeMap<u64, Running>,
    ports: BTreeMap<u64, u16>,
    initial: Vec<(u64, u16)>,
    dir: tempfile::TempDir,
}

impl Group {
    fn start(n: u64, spare: usize) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(n as usize + spare);
        let ports: BTreeMap<u64, u16> = (1..).zip(ports).collect();
        let initial: Vec<(u64, u16)> = (1..=n).map(|i| (i, ports[&i])).collect();
        let nodes = initial
            .iter()
            .map(|(id, port)| {
                (
                    *id,
                    Running::start(config(*id, *port, &initial, dir.path())).unwrap(),
                )
            })
            .collect();
        let g = Group {
            nodes,
            ports,
            initial,
            dir,
        };
        g.leader();
        g
    }

    fn node(&self, id: u64) -> &Running {
        &self.nodes[&id]
    }

    /// The leader all running nodes agree on, waiting for one.
    fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let leader = self
                .nodes
                .values()
                .find(|r| r.stats().role == Role::Leader)
                .map_or(0, Running::id);
            if leader != 0 && self.nodes.values().all(|r| r.stats().leader_id == leader) {
                return leader;
            }
            let states: Vec<_> = self
                .nodes
                .values()
                .map(|r| (r.id(), r.stats().role, r.stats().leader_id, r.stats().term))
                .collect();
            assert!(Instant::now() < deadline, "no single leader: {states:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn follower(&self) -> u64 {
        self.other_than(&[self.leader()])
    }

    /// A running member that is none of `ids`.
    fn other_than(&self, ids: &[u64]) -> u64 {
        *self.nodes.keys().find(|id| !ids.contains(id)).unwrap()
    }

    fn put(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let l = self.leader();
            match self.node(l).run(Op::Put {
                key: key(i),
                value: value(i, 0),
            }) {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline && e.is_retryable() => continue,
                Err(e) => panic!("put {i}: {e}"),
            }
        }
    }

    fn join(&mut self, id: u64) {
        let port = self.ports[&id];
        let r = Running::start(joiner(id, port, self.dir.path())).unwrap();
        self.nodes.insert(id, r);
    }

    /// Waits until every running node applied the leader's commit index.
    fn converge(&self) {
        wait_until(Duration::from_secs(20), "every node caught up", || {
            let commit = self.node(self.leader()).stats().commit_index;
            self.nodes
                .values()
                .all(|r| r.stats().applied_index >= commit)
        });
    }
}

#[test]
fn a_new_node_joins_by_snapshot_is_promoted_and_a_member_is_removed_for_good() {
    let mut g = Group::start(3, 1);
    for i in 0..50 {
        g.put(i);
    }
    let asked = g.follower();
    g.join(4);
    // Asked of a follower: the request reaches the leader through the log.
    let members = g
        .node(asked)
        .change(Change::AddLearner {
            id: 4,
            address: address(g.ports[&4]),
        })
        .unwrap();
    assert_eq!(
        members.iter().map(|m| (m.id, m.voter)).collect::<Vec<_>>(),
        [(1, true), (2, true), (3, true), (4, false)]
    );
    assert_eq!(members[3].address, address(g.ports[&4]));
    g.converge();
    let four = g.node(4);
    assert!(
        four.member.net_stats().snapshots_received >= 1,
        "the new node caught up by a snapshot"
    );
    // Its state is the group's: a read on it (a learner serves reads too).
    match four.run(Op::Get { key: key(7) }).unwrap() {
        Outcome::Value(v) => assert_eq!(v, Some(value(7, 0))),
        other => panic!("{other:?}"),
    }
    let members = g
        .node(g.leader())
        .change(Change::Promote { id: 4 })
        .unwrap();
    assert!(members.iter().all(|m| m.voter), "{members:?}");
    wait_until(
        Duration::from_secs(5),
        "every node sees four voters",
        || {
            g.nodes
                .values()
                .all(|r| r.roles().iter().filter(|(_, v)| *v).count() == 4)
        },
    );

    // Remove a follower other than the asker.
    let gone = g.other_than(&[g.leader(), 4]);
    let members = g
        .node(4)
        .change(Change::Remove {
            id: gone,
            force: false,
        })
        .unwrap();
    assert!(members.iter().all(|m| m.id != gone), "{members:?}");
    let removed = g.nodes.remove(&gone).unwrap();
    wait_until(Duration::from_secs(5), "the removed node stops", || {
        matches!(
            removed.run(Op::Get { key: key(1) }),
            Err(e) if e.code() == "ERR_REMOVED"
        )
    });
    g.put(100);
    // The removed id is never used again.
    let e = g
        .node(g.leader())
        .change(Change::AddLearner {
            id: gone,
            address: "127.0.0.1:1".into(),
        })
        .unwrap_err();
    assert_eq!(e.code(), "ERR_CHANGE_REFUSED", "{e}");
    assert!(e.to_string().contains("never reused"), "{e}");

    drop(removed);

    // A member removed while it was down never learns it: started again on
    // its data dir, it campaigns, is refused at every handshake and cannot
    // disturb the group (the term does not move).
    let l = g.leader();
    let x = g.other_than(&[l, 4]);
    drop(g.nodes.remove(&x));
    let members = g
        .node(l)
        .change(Change::Remove {
            id: x,
            force: false,
        })
        .unwrap();
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), [l, 4]);
    let term = g.node(l).stats().term;
    let refused_before: u64 = g.nodes.values().map(|r| r.member.net_stats().refused).sum();
    let back = Running::start(config(x, g.ports[&x], &g.initial, g.dir.path())).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the removed node is refused",
        || {
            g.nodes
                .values()
                .map(|r| r.member.net_stats().refused)
                .sum::<u64>()
                > refused_before
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(g.node(g.leader()).stats().term, term, "no term inflation");
    g.put(101);
    drop(back);

    // The leader restarted with its original, now stale, initial cluster
    // knows the members from its record: it dials node 4, which it was not
    // configured with.
    drop(g.nodes.remove(&l));
    let restarted = Running::start(config(l, g.ports[&l], &g.initial, g.dir.path())).unwrap();
    let peers: Vec<_> = restarted
        .member
        .node()
        .peers()
        .iter()
        .map(|p| (p.id, p.address.clone()))
        .collect();
    assert_eq!(
        peers,
        [
            (l, Some(address(g.ports[&l]))),
            (4, Some(address(g.ports[&4])))
        ]
    );
    g.nodes.insert(l, restarted);
    g.put(102);
    g.converge();
}

#[test]
fn one_change_at_a_time_and_bad_requests_are_refused() {
    let g = Group::start(3, 2);
    for i in 0..20 {
        g.put(i);
    }
    let l = g.node(g.leader());
    // Two requests in one go: the second finds the first pending.
    let (t1, t2) = (l.token(), l.token());
    let node = l.member.node();
    for (t, id) in [(t1, 4), (t2, 5)] {
        node.change_membership(
            t,
            Change::AddLearner {
                id,
                address: address(g.ports[&id]),
            },
            Duration::from_secs(20),
        )
        .unwrap();
    }
    let mut results = BTreeMap::new();
    for _ in 0..2 {
        let c = l.next_completion();
        results.insert(c.token, c.result);
    }
    assert!(
        matches!(results[&t1], Ok(Outcome::Membership(_))),
        "{:?}",
        results[&t1]
    );
    match &results[&t2] {
        Err(e) => {
            assert_eq!(e.code(), "ERR_CHANGE_IN_PROGRESS", "{e}");
            assert_eq!(e.outcome(), metastore_raft::ErrorOutcome::NotApplied);
        }
        other => panic!("{other:?}"),
    }
    // Node 4 was added but never started: it is too far behind to vote.
    let e = l.change(Change::Promote { id: 4 }).unwrap_err();
    assert_eq!(e.code(), "ERR_LEARNER_BEHIND", "{e}");
    wait_until(Duration::from_secs(5), "every node sees learner 4", || {
        g.nodes.values().all(|r| r.roles().contains(&(4, false)))
    });
    for (change, code) in [
        (
            Change::AddLearner {
                id: 6,
                address: address(g.ports[&1]),
            },
            "ERR_CHANGE_REFUSED",
        ),
        (
            Change::AddLearner {
                id: 4,
                address: "127.0.0.1:9".into(),
            },
            "ERR_CHANGE_REFUSED",
        ),
        (Change::Promote { id: 9 }, "ERR_CHANGE_REFUSED"),
        (
            Change::Remove {
                id: 9,
                force: false,
            },
            "ERR_CHANGE_REFUSED",
        ),
    ] {
        assert_code(l.change(change), code);
    }
    // A change in effect already answers as done: a caller may send it again
    // after an unknown outcome.
    let members = l.change(Change::Promote { id: 1 }).unwrap();
    assert!(members.iter().any(|m| m.id == 1 && m.voter));
    let again = l
        .change(Change::AddLearner {
            id: 4,
            address: address(g.ports[&4]),
        })
        .unwrap();
    assert!(again.iter().any(|m| m.id == 4 && !m.voter));
    // The learner that never answered is removed again, asked for twice in
    // one go (a retry while the first runs): both get the change's answer.
    let (t1, t2) = (l.token(), l.token());
    for t in [t1, t2] {
        let remove = Change::Remove {
            id: 4,
            force: false,
        };
        node.change_membership(t, remove, Duration::from_secs(20))
            .unwrap();
    }
    for _ in 0..2 {
        let c = l.next_completion();
        match c.result {
            Ok(Outcome::Membership(members)) => assert_eq!(members.len(), 3),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_removal_that_leaves_no_live_quorum_is_refused_and_the_leader_hands_over_first() {
    let mut g = Group::start(3, 0);
    for i in 0..10 {
        g.put(i);
    }
    let l = g.leader();
    let stopped = g.follower();
    let other = g.other_than(&[l, stopped]);
    let down = g.nodes.remove(&stopped).unwrap();
    drop(down);
    // The leader notices at its next quorum check (an election timeout).
    std::thread::sleep(Duration::from_millis(500));
    let e = g
        .node(l)
        .change(Change::Remove {
            id: other,
            force: false,
        })
        .unwrap_err();
    assert_eq!(e.code(), "ERR_CHANGE_REFUSED", "{e}");
    assert!(e.to_string().contains("fewer than a quorum"), "{e}");
    let back =
        Running::start(config(stopped, g.ports[&stopped], &g.initial, g.dir.path())).unwrap();
    g.nodes.insert(stopped, back);
    g.converge();

    // Removing the leader: it hands leadership over, then the new leader
    // removes it.
    let old = g.leader();
    let asked = g.follower();
    let members = g
        .node(asked)
        .change(Change::Remove {
            id: old,
            force: false,
        })
        .unwrap();
    assert!(members.iter().all(|m| m.id != old));
    let removed = g.nodes.remove(&old).unwrap();
    let new = g.leader();
    assert_ne!(new, old);
    g.put(11);
    drop(removed);
}

/// Removing node R from {L, F, R} goes through the joint configuration
/// {L, F} & {L, F, R}: with F cut off, L and R commit the entry that enters
/// it, but the one that leaves it needs F. The leader is lost right there;
/// restarted, the group leaves the joint configuration under a new term.
#[test]
fn a_joint_configuration_is_left_after_the_leader_is_lost_inside_it() {
    let mut g = Group::start(3, 0);
    for i in 0..10 {
        g.put(i);
    }
    let l = g.leader();
    let f = g.follower();
    let r = g.other_than(&[l, f]);
    for peer in [l, r] {
        g.node(f).member.block(peer, true);
    }
    let last = g.node(l).stats().last_index;
    let token = g.node(l).token();
    g.node(l)
        .member
        .node()
        .change_membership(
            token,
            Change::Remove { id: r, force: true },
            Duration::from_secs(30),
        )
        .unwrap();
    // Request, entering the joint configuration, leaving it: the leader
    // appends the third only once it applied the second.
    wait_until(
        Duration::from_secs(10),
        "the leader is in the joint configuration",
        || g.node(l).stats().last_index >= last + 3,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        g.node(l).stats().commit_index < last + 3,
        "leaving needs F, which is cut off"
    );
    let term = g.node(l).stats().term;
    let lost = g.nodes.remove(&l).unwrap();
    lost.member.close();
    drop(lost);
    for peer in [l, r] {
        g.node(f).member.block(peer, false);
    }
    let back = Running::start(config(l, g.ports[&l], &g.initial, g.dir.path())).unwrap();
    g.nodes.insert(l, back);
    wait_until(
        Duration::from_secs(20),
        "a single configuration without R",
        || {
            [l, f].iter().all(|id| {
                let roles = g.node(*id).roles();
                roles.len() == 2 && roles.iter().all(|(id, voter)| *voter && *id != r)
            })
        },
    );
    let new = {
        g.nodes.remove(&r);
        g.leader()
    };
    assert!(g.node(new).stats().term > term, "a new term left it");
    g.put(11);
    g.converge();
}

/// A member whose data dir is lost must not come back under its id: it
/// forgot its vote and the entries it acknowledged. Its peers remember the
/// incarnation they first heard from it and refuse the new one.
#[test]
fn a_member_whose_data_dir_was_wiped_cannot_rejoin_under_its_old_id() {
    let mut g = Group::start(3, 0);
    for i in 0..20 {
        g.put(i);
    }
    let l = g.leader();
    let wiped = g.other_than(&[l]);
    drop(g.nodes.remove(&wiped));
    std::fs::remove_dir_all(g.dir.path().join(format!("node-{wiped}"))).unwrap();
    let term = g.node(l).stats().term;
    let refused_before: u64 = g.nodes.values().map(|r| r.member.net_stats().refused).sum();
    let back = Running::start(config(wiped, g.ports[&wiped], &g.initial, g.dir.path())).unwrap();
    // Whichever side speaks first tells: the others refuse its hellos (they
    // remember another incarnation), or it hears the leader's heartbeat
    // about entries it no longer has and stops.
    let refused = || {
        g.nodes
            .values()
            .map(|r| r.member.net_stats().refused)
            .sum::<u64>()
            > refused_before
    };
    let stopped = || back.member.node().failure().map(|e| e.code()) == Some("ERR_STATE_LOST");
    wait_until(
        Duration::from_secs(10),
        "the wiped node is refused or stops",
        || refused() || stopped(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(refused() || stopped());
    assert_eq!(g.node(g.leader()).stats().term, term, "no term inflation");
    assert!(
        back.stats().applied_index <= 1,
        "it got none of the group's state: applied {}",
        back.stats().applied_index
    );
    g.put(21);
    drop(back);
}

/// The handshake itself: a hello under a member's id but with another
/// incarnation than the one its peer first heard is refused and counted.
#[test]
fn a_hello_under_a_known_id_from_another_incarnation_is_refused() {
    use metastore_raft::transport::grpc::pb;
    let g = Group::start(3, 0);
    g.put(1);
    let l = g.leader();
    let f = g.follower();
    let cluster = g.node(l).member.cluster_id().0.to_be_bytes().to_vec();
    let hello = |incarnation| pb::Frame {
        body: Some(pb::frame::Body::Hello(pb::Hello {
            cluster_id: cluster.clone(),
            from: f,
            to: l,
            address: String::new(),
            incarnation,
        })),
    };
    let before = g.node(l).member.net_stats().refused;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = g.node(l).member.local_addr();
    let refused = rt
        .block_on(crate::grpc::stream(addr, vec![hello(12345)]))
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("new member under a new id"),
        "{refused:?}"
    );
    assert_eq!(g.node(l).member.net_stats().refused, before + 1);
    // A hello that names no incarnation (a tool) is judged on the rest.
    assert!(rt
        .block_on(crate::grpc::stream(addr, vec![hello(0)]))
        .is_ok());
    g.put(2);
}
