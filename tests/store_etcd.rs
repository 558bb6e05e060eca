//! The etcd backend against real etcd: concurrency, outages, a 3-member
//! cluster, mutual TLS and authentication.

mod support;

use std::sync::Arc;
use std::time::Duration;

use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
use host_etcd::store::{Compare, Expect, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome};
use support::contract::{get, put};
use support::tls::TestPki;
use support::{free_port, EtcdCluster, EtcdServer};

/// Generous guard around calls that must end by themselves (their own
/// deadline is 1-2 s): a hang fails the test instead of blocking it.
const GUARD: Duration = Duration::from_secs(20);

async fn guarded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {GUARD:?}"))
}

async fn connect(config: &EtcdConfig) -> EtcdStore {
    EtcdStore::connect(config).await.expect("connect to etcd")
}

/// One CAS increment of a decimal counter, retried on conflict with the
/// values the conflict returned. Returns the number of conflicts seen.
async fn increment<S: Store>(s: &S, key: &str) -> u32 {
    let mut current = get(s, key).await;
    let mut conflicts = 0;
    loop {
        let (n, expect) = match &current {
            None => (0u64, Expect::Absent),
            Some(v) => (
                std::str::from_utf8(&v.value)
                    .expect("utf8")
                    .parse()
                    .expect("number"),
                Expect::ModRevision(v.mod_revision),
            ),
        };
        let txn = Txn {
            compares: vec![Compare {
                key: key.into(),
                expect,
            }],
            ops: vec![Op::Put(key.into(), (n + 1).to_string().into_bytes())],
            read_on_conflict: vec![key.into()],
        };
        match s.txn(txn).await.expect("txn") {
            TxnOutcome::Committed { .. } => return conflicts,
            TxnOutcome::Conflict { current: mut c } => {
                conflicts += 1;
                assert_eq!(c.len(), 1);
                current = c.remove(0).1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_increments_lose_no_update() {
    let etcd = EtcdServer::start();
    let store = Arc::new(connect(&etcd.config()).await);
    const TASKS: u64 = 12;
    const EACH: u64 = 15;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                conflicts += increment(&*store, "/counter").await;
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += guarded("increment task", h).await.expect("task panicked");
    }
    let v = get(&*store, "/counter").await.expect("counter exists");
    assert_eq!(v.value, (TASKS * EACH).to_string().into_bytes());
    // The tasks really did race (otherwise this test proves nothing).
    assert!(conflicts > 0, "no conflicts among {TASKS} concurrent tasks");
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Unavailable(m)) => m,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn killed_server_gives_unavailable() {
    let mut etcd = EtcdServer::start();
    let mut config = etcd.config();
    config.request_timeout = Duration::from_secs(1);
    let store = connect(&config).await;
    put(&store, "/k", b"v").await;

    etcd.kill();
    let m = assert_unavailable(
        "read",
        guarded("read", store.read(&[Read::Get("/k".into())])).await,
    );
    assert!(m.contains(&etcd.url()), "message names the endpoint: {m}");
    assert_unavailable(
        "txn",
        guarded(
            "txn",
            store.txn(Txn {
                ops: vec![Op::Put("/k".into(), b"w".to_vec())],
                ..Txn::default()
            }),
        )
        .await,
    );

    // The same client recovers once etcd is back; the data survived.
    etcd.restart();
    let mut back = None;
    for _ in 0..50 {
        match guarded("read", store.read(&[Read::Get("/k".into())])).await {
            Ok(r) => {
                back = Some(r);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("after restart: {e:?}"),
        }
    }
    match back.as_deref() {
        Some([ReadResult::Get(Some(v))]) => assert_eq!(v.value, b"v"),
        other => panic!("after restart: {other:?}"),
    }
}

#[tokio::test]
async fn paused_server_hits_the_request_deadline() {
    let etcd = EtcdServer::start();
    let mut config = etcd.config();
    config.request_timeout = Duration::from_secs(1);
    let store = connect(&config).await;
    put(&store, "/k", b"v").await;

    etcd.pause();
    let m = assert_unavailable(
        "read",
        guarded("read", store.read(&[Read::Get("/k".into())])).await,
    );
    etcd.resume();
    assert!(
        m.contains("timed out after") || m.contains("eadline"),
        "{m}"
    );
    // Answers again after SIGCONT.
    let mut ok = false;
    for _ in 0..50 {
        if guarded("read", store.read(&[Read::Get("/k".into())]))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no answer after SIGCONT");
}

#[tokio::test]
async fn nothing_listening_gives_unavailable() {
    let config = EtcdConfig::default()
        .with_endpoints([format!("127.0.0.1:{}", free_port())])
        .with_dial_timeout(Duration::from_secs(1))
        .with_request_timeout(Duration::from_secs(1));
    // Connecting without credentials does not contact etcd; either step
    // may report the failure, and it must be Unavailable.
    let r = match guarded("connect", EtcdStore::connect(&config)).await {
        Ok(store) => guarded("read", store.read(&[Read::Get("/k".into())])).await,
        Err(e) => Err(e),
    };
    let m = assert_unavailable("read", r);
    assert!(
        m.contains(&config.endpoints[0]),
        "message names the endpoint: {m}"
    );
}

#[tokio::test]
async fn too_many_ops_is_refused() {
    let etcd = EtcdServer::start_with(EtcdCluster::builder().extra_args(["--max-txn-ops=4"]));
    let store = connect(&etcd.config()).await;
    let ops = (0..5)
        .map(|i| Op::Put(format!("/many/{i}"), vec![]))
        .collect();
    match store
        .txn(Txn {
            ops,
            ..Txn::default()
        })
        .await
    {
        Err(StoreError::Refused(m)) => assert!(m.contains("too many operations"), "{m}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(get(&store, "/many/0").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_a_member_loss() {
    let mut cluster = EtcdCluster::start(3);
    let a = connect(&cluster.member_config(0)).await;
    let b = connect(&cluster.member_config(1)).await;

    // A write through member 0 is visible through member 1 (linearizable).
    let r = put(&a, "/shared", b"from-a").await;
    let v = get(&b, "/shared").await.expect("visible through member 1");
    assert_eq!((v.value.as_slice(), v.mod_revision), (&b"from-a"[..], r));

    // Lose a follower: every operation through the others succeeds.
    let leader = cluster.leader().expect("cluster has a leader");
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.kill(victim);
    let all = connect(&cluster.config()).await; // includes the dead member
    let survivor = connect(&cluster.member_config(leader)).await;
    for i in 0..20 {
        let key = format!("/after-follower-loss/{i}");
        put(&all, &key, b"x").await;
        assert!(get(&survivor, &key).await.is_some());
    }

    // Lose the leader instead (with the follower back): after the election
    // the cluster takes writes again.
    cluster.restart(victim);
    let leader = cluster.leader().expect("cluster has a leader");
    cluster.kill(leader);
    let mut committed = false;
    for _ in 0..100 {
        match guarded(
            "txn",
            all.txn(Txn {
                ops: vec![Op::Put("/after-leader-loss".into(), b"y".to_vec())],
                ..Txn::default()
            }),
        )
        .await
        {
            Ok(TxnOutcome::Committed { .. }) => {
                committed = true;
                break;
            }
            Ok(other) => panic!("unconditional txn: {other:?}"),
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(committed, "no write succeeded after the leader was killed");
    for i in (0..3).filter(|&i| i != leader) {
        let s = connect(&cluster.member_config(i)).await;
        assert!(get(&s, "/after-leader-loss").await.is_some(), "member {i}");
    }
}

#[tokio::test]
async fn mutual_tls() {
    let pki = TestPki::generate();
    let etcd = EtcdServer::start_with(EtcdCluster::builder().tls(pki.server_tls(true)));

    // Right CA and client certificate: works, with host:port and https://.
    let good = etcd.config();
    let store = connect(&good).await;
    put(&store, "/tls", b"ok").await;
    let bare = good
        .clone()
        .with_endpoints([etcd.url().trim_start_matches("https://").to_string()]);
    assert_eq!(
        get(&connect(&bare).await, "/tls").await.expect("k").value,
        b"ok"
    );

    // Without a client certificate: the server refuses the handshake.
    let no_cert = good.clone().without_client_cert();
    let err = first_error(&no_cert).await;
    assert!(
        matches!(err, StoreError::Config(_) | StoreError::Unavailable(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Trusting another CA: the server certificate is rejected.
    let wrong_ca = good.clone().with_trusted_ca_file(pki.other_ca.clone());
    let err = first_error(&wrong_ca).await;
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // Unreadable or non-PEM TLS files are configuration errors naming them.
    let missing = pki.dir().join("missing.pem");
    let err = EtcdStore::connect(&good.clone().with_trusted_ca_file(missing.clone()))
        .await
        .expect_err("missing CA file");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let err = EtcdStore::connect(
        &good.with_key_file(pki.client_cert.clone()), // a certificate, not a key
    )
    .await
    .expect_err("certificate as key");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("key_file"), "{err}");
}

/// The error of connecting and reading once (whichever step fails).
async fn first_error(config: &EtcdConfig) -> StoreError {
    let r = match guarded("connect", EtcdStore::connect(config)).await {
        Ok(store) => guarded("read", store.read(&[Read::Get("/k".into())])).await,
        Err(e) => Err(e),
    };
    r.expect_err("expected the connection to fail")
}

#[tokio::test]
async fn authentication() {
    let etcd = EtcdServer::start();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "ipam:s3cret-pw"],
        &["role", "add", "ipam"],
        &[
            "role",
            "grant-permission",
            "ipam",
            "readwrite",
            "/ipam/",
            "--prefix=true",
        ],
        &["user", "grant-role", "ipam", "ipam"],
        &["auth", "enable"],
    ] {
        let out = etcd.etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let user = |name: &str, pw: &str| etcd.config().with_user(name, pw);

    let store = connect(&user("ipam", "s3cret-pw")).await;
    put(&store, "/ipam/k", b"v").await;
    assert!(get(&store, "/ipam/k").await.is_some());

    // Outside the granted prefix: permission denied.
    match store.read(&[Read::Get("/other".into())]).await {
        Err(StoreError::Refused(m)) => assert!(m.contains("permission denied"), "{m}"),
        other => panic!("expected Refused, got {other:?}"),
    }

    // Wrong password: refused at connect, and the password is not echoed.
    match EtcdStore::connect(&user("ipam", "wrong-pw")).await {
        Err(StoreError::Refused(m)) => {
            assert!(m.contains("authentication failed"), "{m}");
            assert!(!m.contains("wrong-pw"), "{m}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }

    // No credentials at all: refused.
    let anonymous = connect(&etcd.config()).await;
    match anonymous.read(&[Read::Get("/ipam/k".into())]).await {
        Err(StoreError::Refused(_)) => {}
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn store_on_an_existing_client_keeps_the_contract() {
    let etcd = EtcdServer::start();
    let config = etcd.config();
    // The embedder's own client (etcd's URL as the test cluster gives it).
    let client = etcd_client::Client::connect([etcd.url()], None)
        .await
        .expect("connect the embedder's client");
    let store = EtcdStore::from_client(client.clone(), &config);
    assert_eq!(store.endpoints(), config.endpoints.join(","));
    support::contract::check_contract(&store, "/from-client").await;
    // Writes through the store are the client's cluster's writes.
    put(&store, "/shared", b"v").await;
    let mut kv = client.kv_client();
    let got = kv
        .get("/shared", None)
        .await
        .expect("get through the client");
    assert_eq!(got.kvs()[0].value(), b"v");
}
