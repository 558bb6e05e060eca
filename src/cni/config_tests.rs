//! Tests of network config parsing, including the two example
//! configurations in `testdata/` (the README's example, and one with stage
//! lists and a trailing comma).

use super::*;

const HOST_ETCD_README: &str = include_str!("testdata/host-etcd-readme.json");
const MY_IPAM_README: &str = include_str!("testdata/my-ipam-readme.json");

fn parse(s: &str) -> Result<NetConf, CniError> {
    NetConf::parse(s.as_bytes())
}

fn spec(subnet: &str) -> RangeSpec {
    RangeSpec {
        subnet: subnet.into(),
        ..RangeSpec::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// The error's code and its `details` text.
fn err(s: &str) -> (u32, String) {
    match parse(s) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => (e.code(), e.to_string()),
    }
}

fn specs(c: &NetConf) -> Vec<Vec<RangeSpec>> {
    c.ipam
        .range_sets
        .iter()
        .map(|s| s.iter().map(|r| r.spec.clone()).collect())
        .collect()
}

#[test]
fn host_etcd_readme_example() {
    let c = parse(HOST_ETCD_README).expect("the README example parses");
    assert_eq!(c.cni_version, CniVersion::V0_3_1);
    assert_eq!(c.name, "examplenet");
    let first = RangeSpec {
        subnet: "10.10.0.0/16".into(),
        range_start: Some("10.10.1.20".into()),
        range_end: Some("10.10.3.50".into()),
        gateway: Some("10.10.0.254".into()),
        ..RangeSpec::default()
    };
    let v6 = RangeSpec {
        subnet: "3ffe:ffff:0:01ff::/64".into(),
        range_start: Some("3ffe:ffff:0:01ff::0010".into()),
        range_end: Some("3ffe:ffff:0:01ff::0020".into()),
        ..RangeSpec::default()
    };
    assert_eq!(
        specs(&c),
        vec![vec![first, spec("172.16.5.0/24")], vec![v6]]
    );
    let paths: Vec<&str> = c.ipam.range_sets[0]
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(paths, ["ipam.ranges[0][0]", "ipam.ranges[0][1]"]);
    assert_eq!(
        c.ipam.routes,
        vec![
            Route {
                dst: "0.0.0.0/0".parse().expect("net"),
                gw: None
            },
            Route {
                dst: "192.168.0.0/16".parse().expect("net"),
                gw: Some(ip("10.10.5.1"))
            },
            Route {
                dst: "3ffe:ffff:0:01ff::1/64".parse().expect("net"),
                gw: None
            },
        ]
    );
    match &c.ipam.store {
        StoreConf::Etcd(e) => {
            assert_eq!(e.endpoints, ["127.0.0.1:2379"]);
            assert_eq!(e.cert_file, None);
        }
        other => panic!("endpoints given: expected etcd, got {other:?}"),
    }
    assert_eq!(c.ipam.prefix, DEFAULT_PREFIX);
    assert_eq!(c.ipam.chunk_bits, None);
}

#[test]
fn host_etcd_readme_command_line_example() {
    let c = parse(
        r#"{ "cniVersion": "0.3.1", "name": "examplenet", "ipam": { "type": "host-etcd", "ranges": [ [{"subnet": "203.0.113.0/24"}], [{"subnet": "2001:db8:1::/64"}]], "endpoints": ["127.0.0.1:2379"], "certfile":"/tmp/certs/peer-cert.pem", "keyfile":"/tmp/certs/peer-key.pem", "trustedcafile":"/tmp/certs/ca.pem"  } }"#,
    )
    .expect("parses");
    assert_eq!(
        specs(&c),
        vec![vec![spec("203.0.113.0/24")], vec![spec("2001:db8:1::/64")]]
    );
    match &c.ipam.store {
        StoreConf::Etcd(e) => {
            assert_eq!(e.cert_file, Some(PathBuf::from("/tmp/certs/peer-cert.pem")));
            assert_eq!(e.key_file, Some(PathBuf::from("/tmp/certs/peer-key.pem")));
            assert_eq!(e.trusted_ca_file, Some(PathBuf::from("/tmp/certs/ca.pem")));
            assert_eq!(e.dial_timeout, Duration::from_secs(2));
        }
        other => panic!("expected etcd, got {other:?}"),
    }
}

#[test]
fn my_ipam_readme_trailing_comma_is_code_6_with_line_and_column() {
    let (code, details) = err(MY_IPAM_README);
    assert_eq!(code, 6);
    // Line 22 is `{ "dst": "0.0.0.0/0" },`; the parser stops at the `]` of
    // line 23, column 3 (after two tabs).
    assert!(
        details.contains("trailing comma at line 23 column 3"),
        "{details}"
    );
    match parse(MY_IPAM_README) {
        Err(CniError::Decode { line, column, .. }) => assert_eq!((line, column), (23, 3)),
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[test]
fn my_ipam_readme_without_the_comma_parses() {
    let fixed = MY_IPAM_README.replace(
        "{ \"dst\": \"0.0.0.0/0\" },\n",
        "{ \"dst\": \"0.0.0.0/0\" }\n",
    );
    assert_ne!(fixed, MY_IPAM_README);
    let c = parse(&fixed).expect("parses without the trailing comma");
    let mut first = RangeSpec {
        subnet: "10.10.0.0/16".into(),
        range_start: Some("10.10.1.20".into()),
        range_end: Some("10.10.1.40".into()),
        gateway: Some("10.10.1.1".into()),
        ..RangeSpec::default()
    };
    first
        .stages
        .insert("sandbox".into(), vec!["10.10.1.20".into()]);
    first
        .stages
        .insert("smallflow".into(), vec!["10.10.1.21".into()]);
    assert_eq!(specs(&c), vec![vec![first, spec("172.16.5.0/24")]]);
    assert_eq!(c.ipam.routes.len(), 1);
    assert_eq!(
        c.ipam.store,
        StoreConf::Local {
            data_dir: PathBuf::from("/run/my-orchestrator/container-ipam-state"),
            lock_wait: Duration::from_secs(10),
        }
    );
}

#[test]
fn my_ipam_readme_command_line_example() {
    let c = parse(
        r#"{ "cniVersion": "0.3.1", "name": "my-macvlan", "ipam": { "type": "host-etcd", "ranges": [ [{"subnet": "203.0.113.0/24"}], [{"subnet": "2001:db8:1::/64"}]], "dataDir": "/tmp/cni-example"  } }"#,
    )
    .expect("parses");
    assert!(
        matches!(&c.ipam.store, StoreConf::Local { data_dir, .. } if data_dir == &PathBuf::from("/tmp/cni-example"))
    );
}

#[test]
fn no_endpoints_means_embedded_store_under_the_default_dir() {
    let c = parse(r#"{"cniVersion":"1.0.0","name":"net1","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]],"endpoints":[]}}"#)
        .expect("parses");
    assert!(matches!(&c.ipam.store, StoreConf::Local { data_dir, .. }
        if data_dir == &PathBuf::from("/var/lib/cni/host-etcd/net1")));
}

#[test]
fn shorthand_range_is_prepended_like_host_local() {
    let c = parse(
        r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":"10.9.0.0/24","gateway":"10.9.0.254",
            "ranges":[[{"subnet":"10.8.0.0/24"}]]}}"#,
    )
    .expect("parses");
    let short = RangeSpec {
        subnet: "10.9.0.0/24".into(),
        gateway: Some("10.9.0.254".into()),
        ..RangeSpec::default()
    };
    assert_eq!(specs(&c), vec![vec![short], vec![spec("10.8.0.0/24")]]);
    assert_eq!(c.ipam.range_sets[0][0].path, "ipam");
}

#[test]
fn unknown_fields_are_ignored() {
    let c = parse(
        r#"{"cniVersion":"1.1.0","name":"n","type":"bridge","bridge":"cni0","mtu":1500,
            "ipam":{"type":"host-etcd","ranges":[[{"subnet":"10.0.0.0/24","whatever":[1]}]],"future":{}},
            "args":{"labels":{"a":"b"},"cni":{"other":1}},"dns":{"nameservers":["1.1.1.1"]}}"#,
    )
    .expect("parses");
    assert_eq!(specs(&c), vec![vec![spec("10.0.0.0/24")]]);
    assert!(c.requested.is_empty());
}

#[test]
fn timeouts_prefix_chunk_bits() {
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]],
            "endpoints":"https://e1:2379, https://e2:2379","username":"u","password":"p",
            "dialTimeoutMs":500,"requestTimeoutMs":700,"budgetMs":3000,"maxAttempts":9,
            "prefix":"/ipam/","chunkBits":12}}"#,
    )
    .expect("parses");
    assert_eq!(c.ipam.budget, Duration::from_millis(3000));
    assert_eq!(c.ipam.max_attempts, 9);
    assert_eq!(c.ipam.prefix, "/ipam");
    assert_eq!(c.ipam.chunk_bits, Some(12));
    assert_eq!(c.options().budget, Duration::from_millis(3000));
    assert_eq!(c.options().max_attempts, 9);
    match &c.ipam.store {
        StoreConf::Etcd(e) => {
            assert_eq!(e.endpoints, ["https://e1:2379", "https://e2:2379"]);
            assert_eq!(e.username.as_deref(), Some("u"));
            assert_eq!(e.password.as_deref(), Some("p"));
            assert_eq!(e.dial_timeout, Duration::from_millis(500));
            assert_eq!(e.request_timeout, Duration::from_millis(700));
        }
        other => panic!("expected etcd, got {other:?}"),
    }
}

#[test]
fn wrong_types_name_the_field() {
    let base = |ipam: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}}}"#);
    let cases = [
        (
            base(r#"{"ranges":"x"}"#),
            "ipam.ranges: invalid type: string \"x\", expected a sequence",
        ),
        (
            base(r#"{"ranges":[{"subnet":"10.0.0.0/24"}]}"#),
            "ipam.ranges[0]: invalid type: map, expected a sequence",
        ),
        (
            base(r#"{"ranges":[[{"subnet":5}]]}"#),
            "ipam.ranges[0][0].subnet: invalid type: integer `5`, expected a string",
        ),
        (
            base(r#"{"ranges":[[{"subnet":"10.0.0.0/24","sandbox":"10.0.0.5"}]]}"#),
            "ipam.ranges[0][0].sandbox: invalid type: string \"10.0.0.5\", expected a sequence",
        ),
        (
            base(r#"{"ranges":[[{"subnet":"10.0.0.0/24","smallflow":[7]}]]}"#),
            "ipam.ranges[0][0].smallflow[0]: invalid type: integer `7`, expected a string",
        ),
        (
            base(r#"{"ranges":[[{"rangeStart":"10.0.0.5"}]]}"#),
            "ipam.ranges[0][0].subnet: missing",
        ),
        (
            base(r#"{"ranges":[[]]}"#),
            "ipam.ranges[0]: empty range set",
        ),
        (
            base(r#"{"ranges":[]}"#),
            "ipam.ranges: no IP ranges specified",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","routes":{"dst":"0.0.0.0/0"}}"#),
            "ipam.routes: invalid type: map, expected a sequence",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}"#),
            "ipam.routes[0].dst: missing",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","routes":[{"dst":"10.0.0.0"}]}"#),
            "ipam.routes[0].dst: \"10.0.0.0\" is not a CIDR",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"x"}]}"#),
            "ipam.routes[0].gw: \"x\" is not an IP address",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","endpoints":[1]}"#),
            "ipam.endpoints[0]: invalid type: integer `1`, expected a string",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","budgetMs":"5"}"#),
            "ipam.budgetMs: invalid type: string \"5\", expected u64",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","chunkBits":40}"#),
            "ipam.chunkBits: 40 is out of range 6..=20",
        ),
        (
            base(r#"{"subnet":"10.0.0.0/24","resolvConf":true}"#),
            "ipam.resolvConf: invalid type: boolean `true`, expected a string",
        ),
        (
            base(r#""x""#),
            "ipam: invalid type: string \"x\", expected an object",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n"}"#.to_string(),
            "ipam: missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","ipam":{}}"#.to_string(),
            "name: missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"a/b","ipam":{}}"#.to_string(),
            "name: \"a/b\" is not a valid network name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":5,"ipam":{}}"#.to_string(),
            "name: invalid type: integer `5`, expected a string",
        ),
        (
            r#"[]"#.to_string(),
            "network config: invalid type: sequence, expected an object",
        ),
    ];
    for (input, want) in cases {
        let (code, details) = err(&input);
        assert_eq!(code, 7, "{input}");
        assert!(
            details.starts_with(want),
            "{input}\n got: {details}\nwant: {want}"
        );
    }
}

#[test]
fn version_is_checked_first() {
    assert_eq!(err(r#"{"name":"n","ipam":{}}"#).0, 1);
    assert_eq!(err(r#"{"cniVersion":"0.2.0","name":"n","ipam":{}}"#).0, 1);
    assert_eq!(err(r#"{"cniVersion":1,"name":"n"}"#).0, 7);
    for v in super::super::version::SUPPORTED {
        let c = parse(&format!(
            r#"{{"cniVersion":"{v}","name":"n","ipam":{{"subnet":"10.0.0.0/8"}}}}"#
        ));
        assert_eq!(c.map(|c| c.cni_version.as_str()).ok(), Some(v));
    }
}

#[test]
fn not_json_is_code_6() {
    for input in ["", "{", "{\"cniVersion\": }", "nope"] {
        assert_eq!(err(input).0, 6, "{input:?}");
    }
}

#[test]
fn requested_ips_from_args_and_runtime_config() {
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},
            "args":{"cni":{"ips":["10.7.0.20","fd00::5/64"]}},
            "runtimeConfig":{"ips":["10.7.0.20/24","10.7.0.21"]}}"#,
    )
    .expect("parses");
    assert_eq!(
        c.requested,
        vec![ip("10.7.0.20"), ip("fd00::5"), ip("10.7.0.21")]
    );
    let (code, details) = err(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},"runtimeConfig":{"ips":["10.7.0.300"]}}"#,
    );
    assert_eq!(code, 7);
    assert!(details.starts_with("runtimeConfig.ips[0]:"), "{details}");
}

#[test]
fn prev_result_ips() {
    let c = parse(
        r#"{"cniVersion":"0.4.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},
            "prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],
              "ips":[{"version":"4","address":"10.7.0.2/24","gateway":"10.7.0.1","interface":0},
                     {"address":"fd00::2/64"}]}}"#,
    )
    .expect("parses");
    assert_eq!(c.prev_result_ips, Some(vec![ip("10.7.0.2"), ip("fd00::2")]));
    let (code, details) = err(
        r#"{"cniVersion":"0.4.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},"prevResult":{"ips":[{"address":"10.7.0.2"}]}}"#,
    );
    assert_eq!(code, 7);
    assert!(
        details.starts_with("prevResult.ips[0].address"),
        "{details}"
    );
}

#[test]
fn valid_attachments() {
    let c = parse(
        r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]}"#,
    )
    .expect("parses");
    let ids: Vec<(String, String)> = c
        .valid_attachments
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.container_id, o.ifname))
        .collect();
    assert_eq!(
        ids,
        [("a".into(), "eth0".into()), ("b".into(), "net1".into())]
    );
    let legacy = parse(
        r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},"cni.dev/attachments":[]}"#,
    )
    .expect("parses");
    assert_eq!(legacy.valid_attachments, Some(vec![]));
    let (code, details) = err(
        r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},"cni.dev/valid-attachments":[{"containerID":"a"}]}"#,
    );
    assert_eq!(code, 7);
    assert!(
        details.starts_with("cni.dev/valid-attachments[0].ifname: missing"),
        "{details}"
    );
}

#[test]
fn set_paths_for_range_set_errors() {
    assert_eq!(set_path("ipam.ranges[3][1]"), "ipam.ranges[3]");
    assert_eq!(
        set_path("runtimeConfig.ipRanges[2][0]"),
        "runtimeConfig.ipRanges[2]"
    );
    assert_eq!(set_path("ipam.ipRanges[2]"), "ipam.ipRanges[2]");
    assert_eq!(set_path("ipam"), "ipam");
}

/// The code and text of the first error of `parse` then `network`.
fn net_err(s: &str) -> (u32, String) {
    match parse(s).and_then(|c| c.network()) {
        Ok(n) => panic!("expected an error, got {n:?}"),
        Err(e) => (e.code(), e.to_string()),
    }
}

fn conf(ipam: &str) -> String {
    format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}}}"#)
}

#[test]
fn runtime_ip_ranges_are_prepended_like_host_local() {
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.7.0.0/24","ranges":[[{"subnet":"10.8.0.0/24"}]]},
            "runtimeConfig":{"ipRanges":[[{"subnet":"10.1.0.0/16","rangeStart":"10.1.0.9"},{"subnet":"10.2.0.0/24"}],[{"subnet":"fd00::/64","exclude":["fd00::/120"]}]]}}"#,
    )
    .expect("parses");
    let subnets: Vec<Vec<&str>> = c
        .ipam
        .range_sets
        .iter()
        .map(|s| s.iter().map(|r| r.spec.subnet.as_str()).collect())
        .collect();
    assert_eq!(
        subnets,
        vec![
            vec!["10.1.0.0/16", "10.2.0.0/24"],
            vec!["fd00::/64"],
            vec!["10.7.0.0/24"],
            vec!["10.8.0.0/24"]
        ]
    );
    assert_eq!(c.ipam.range_sets[0][1].path, "runtimeConfig.ipRanges[0][1]");
    assert_eq!(c.ipam.range_sets[1][0].spec.exclude, ["fd00::/120"]);
    let net = c.network().expect("valid");
    assert_eq!(net.sets.len(), 4);
    assert_eq!(net.sets[0].ranges()[0].start, ip("10.1.0.9"));

    // The capability alone is enough (no ranges in ipam), as in host-local.
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{},"runtimeConfig":{"ipRanges":[[{"subnet":"10.5.0.0/24"}]]}}"#,
    )
    .expect("parses");
    assert_eq!(specs(&c), vec![vec![spec("10.5.0.0/24")]]);
    // An empty list is ignored.
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.7.0.0/24"},"runtimeConfig":{"ipRanges":[]}}"#,
    )
    .expect("parses");
    assert_eq!(specs(&c), vec![vec![spec("10.7.0.0/24")]]);

    // Bad input names the field.
    let rc = |v: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"subnet":"10.7.0.0/24"}},"runtimeConfig":{{"ipRanges":{v}}}}}"#
        )
    };
    let cases = [
        (
            rc(r#"{"subnet":"10.1.0.0/16"}"#),
            "runtimeConfig.ipRanges: invalid type: map, expected a sequence",
        ),
        (
            rc(r#"[{"subnet":"10.1.0.0/16"}]"#),
            "runtimeConfig.ipRanges[0]: invalid type: map, expected a sequence",
        ),
        (rc("[[]]"), "runtimeConfig.ipRanges[0]: empty range set"),
        (
            rc(r#"[[{"rangeStart":"10.1.0.1"}]]"#),
            "runtimeConfig.ipRanges[0][0].subnet: missing",
        ),
        (
            rc(r#"[[{"subnet":"10.1.0.0/16","exclude":"10.1.0.1"}]]"#),
            "runtimeConfig.ipRanges[0][0].exclude: invalid type: string \"10.1.0.1\", expected a sequence",
        ),
    ];
    for (input, want) in &cases {
        let (code, details) = err(input);
        assert_eq!(code, 7, "{input}");
        assert!(
            details.starts_with(want),
            "{input}\n got: {details}\nwant: {want}"
        );
    }
    let (code, details) = net_err(&rc(r#"[[{"subnet":"10.1.0.0/33"}]]"#));
    assert_eq!(code, 7);
    assert!(
        details.starts_with("runtimeConfig.ipRanges[0][0]: subnet"),
        "{details}"
    );
    // Overlap with the configured ranges is refused, as host-local does.
    let (code, details) = net_err(&rc(r#"[[{"subnet":"10.7.0.0/16"}]]"#));
    assert_eq!(code, 7);
    assert!(details.contains("overlaps"), "{details}");
}

#[test]
fn exclude_lists_parse_and_validate() {
    let c = parse(&conf(
        r#"{"ranges":[[{"subnet":"10.0.0.0/24","exclude":["10.0.0.16/28","10.0.0.99"]}]],"subnet":"10.9.0.0/24","exclude":["10.9.0.5"]}"#,
    ))
    .expect("parses");
    assert_eq!(c.ipam.range_sets[0][0].spec.exclude, ["10.9.0.5"]);
    assert_eq!(
        c.ipam.range_sets[1][0].spec.exclude,
        ["10.0.0.16/28", "10.0.0.99"]
    );
    let net = c.network().expect("valid");
    let r = &net.sets[1].ranges()[0];
    assert!(r.is_excluded(ip("10.0.0.20")) && !r.is_allocatable(ip("10.0.0.20")));
    assert!(r.is_allocatable(ip("10.0.0.32")));
    assert_eq!(r.excluded_len(), 17);

    let cases = [
        (
            r#"{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.1.0.0/24","exclude":["10.1.0.1","10.1.0.2","10.2.0.0/28"]}]]}"#,
            "ipam.ranges[0][1].exclude[2]: exclude entry \"10.2.0.0/28\": not inside subnet 10.1.0.0/24",
        ),
        (
            r#"{"subnet":"10.1.0.0/24","exclude":["nope"]}"#,
            "ipam.exclude[0]: exclude entry \"nope\": not a CIDR or an IP address",
        ),
        (
            r#"{"subnet":"10.1.0.0/24","exclude":["fd00::/64"]}"#,
            "ipam.exclude[0]: exclude entry \"fd00::/64\": not of the address family of subnet 10.1.0.0/24",
        ),
        (
            r#"{"subnet":"10.1.0.0/24","exclude":["10.1.0.0/23"]}"#,
            "ipam.exclude[0]: exclude entry \"10.1.0.0/23\": not inside subnet 10.1.0.0/24",
        ),
        (
            r#"{"subnet":"10.1.0.0/24","exclude":["10.1.0.0/25","10.1.0.128/25"]}"#,
            "ipam: exclude: covers every allocatable address of the range 10.1.0.2-10.1.0.254",
        ),
        (
            // Everything but the gateway: still nothing to hand out.
            r#"{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","gateway":"10.1.0.15","exclude":["10.1.0.8/29","10.1.0.16/29"]}]]}"#,
            "ipam.ranges[0][0]: exclude: covers every allocatable address",
        ),
        (
            r#"{"subnet":"10.1.0.0/24","sandbox":["10.1.0.7"],"exclude":["10.1.0.4/30"]}"#,
            "ipam: stage \"sandbox\" address \"10.1.0.7\": is excluded (exclude entry 10.1.0.4/30)",
        ),
    ];
    for (ipam, want) in cases {
        let (code, details) = net_err(&conf(ipam));
        assert_eq!(code, 7, "{ipam}");
        assert!(
            details.starts_with(want),
            "{ipam}\n got: {details}\nwant: {want}"
        );
    }
    let (code, details) = err(&conf(r#"{"subnet":"10.1.0.0/24","exclude":[5]}"#));
    assert_eq!(
        (code, details.as_str()),
        (
            7,
            "ipam.exclude[0]: invalid type: integer `5`, expected a string"
        )
    );
    let (code, details) = err(&conf(
        r#"{"ranges":[[{"subnet":"10.1.0.0/24"}]],"exclude":["10.1.0.5"]}"#,
    ));
    assert_eq!(code, 7);
    assert!(
        details.starts_with("ipam.exclude: applies to the top-level range"),
        "{details}"
    );
}

#[test]
fn whereabouts_single_range() {
    // The whereabouts README's example, with endpoints instead of etcd_host
    // and the gateway moved inside the range's subnet.
    let c = parse(&conf(
        r#"{"type":"whereabouts","endpoints":"https://e1:2379","range":"192.168.2.225/28",
            "exclude":["192.168.2.229/30","192.168.2.236/32"],"log_file":"/tmp/w.log","log_level":"debug",
            "gateway":"192.168.2.238","leader_lease_duration":1500,"enable_overlapping_ranges":false}"#,
    ))
    .expect("parses");
    let want = RangeSpec {
        subnet: "192.168.2.224/28".into(),
        gateway: Some("192.168.2.238".into()),
        exclude: vec!["192.168.2.229/30".into(), "192.168.2.236/32".into()],
        ..RangeSpec::default()
    };
    assert_eq!(specs(&c), vec![vec![want]]);
    assert_eq!(c.ipam.range_sets[0][0].path, "ipam");
    let net = c.network().expect("valid");
    let r = &net.sets[0].ranges()[0];
    let usable: Vec<String> = (r.first()..=r.last())
        .filter(|v| r.is_allocatable_u128(*v))
        .map(|v| format!("{}", std::net::Ipv4Addr::from(v as u32)))
        .collect();
    assert_eq!(
        usable,
        [
            "192.168.2.226",
            "192.168.2.227",
            "192.168.2.232",
            "192.168.2.233",
            "192.168.2.234",
            "192.168.2.235",
            "192.168.2.237"
        ]
    );

    // start-end/prefix: the subnet is end/prefix, both bounds inclusive.
    let c = parse(&conf(r#"{"range":"192.168.2.225-192.168.2.230/28"}"#)).expect("parses");
    let want = RangeSpec {
        subnet: "192.168.2.224/28".into(),
        range_start: Some("192.168.2.225".into()),
        range_end: Some("192.168.2.230".into()),
        ..RangeSpec::default()
    };
    assert_eq!(specs(&c), vec![vec![want]]);
    let r = c.network().expect("valid").sets[0].ranges()[0].clone();
    assert_eq!((r.start, r.end), (ip("192.168.2.225"), ip("192.168.2.230")));

    // range_start / range_end narrow the CIDR form.
    let c = parse(&conf(
        r#"{"range":"fd00::/64","range_start":"fd00::10","range_end":"fd00::20"}"#,
    ))
    .expect("parses");
    let r = c.network().expect("valid").sets[0].ranges()[0].clone();
    assert_eq!((r.start, r.end), (ip("fd00::10"), ip("fd00::20")));
}

#[test]
fn whereabouts_ip_ranges_one_set_per_entry() {
    let c = parse(&conf(
        r#"{"range":"10.0.0.0/24","ipRanges":[{"range":"10.1.0.0/24","exclude":["10.1.0.0/28"]},
            {"range":"fd00::/64","range_start":"fd00::5"}],"gateway":"10.1.0.254"}"#,
    ))
    .expect("parses");
    let paths: Vec<Vec<&str>> = c
        .ipam
        .range_sets
        .iter()
        .map(|s| s.iter().map(|r| r.path.as_str()).collect())
        .collect();
    assert_eq!(
        paths,
        vec![
            vec!["ipam"],
            vec!["ipam.ipRanges[0]"],
            vec!["ipam.ipRanges[1]"]
        ]
    );
    let gateways: Vec<Option<&str>> = c
        .ipam
        .range_sets
        .iter()
        .map(|s| s[0].spec.gateway.as_deref())
        .collect();
    assert_eq!(gateways, [None, Some("10.1.0.254"), None]);
    let net = c.network().expect("valid");
    assert_eq!(net.sets.len(), 3);
    assert_eq!(net.sets[2].ranges()[0].start, ip("fd00::5"));
    let (code, details) = err(&conf(
        r#"{"ipRanges":[{"range":"10.1.0.0/24"}],"range_start":"10.1.0.9"}"#,
    ));
    assert_eq!(code, 7);
    assert!(
        details.starts_with("ipam.range_start: needs ipam.range"),
        "{details}"
    );
}

#[test]
fn whereabouts_bad_input_names_the_field() {
    let cases = [
        (r#"{"range":5}"#, "ipam.range: invalid type: integer `5`, expected a string"),
        (r#"{"range":"10.0.0.0"}"#, "ipam.range: \"10.0.0.0\": \"10.0.0.0\" is not a CIDR"),
        (r#"{"range":"10.0.0.9-10.0.0.3/24"}"#, "ipam.range: \"10.0.0.9-10.0.0.3/24\": start 10.0.0.9 is after end 10.0.0.3"),
        (r#"{"range":"10.0.1.9-10.0.0.30/24"}"#, "ipam.range: \"10.0.1.9-10.0.0.30/24\": start 10.0.1.9 is not in subnet 10.0.0.0/24"),
        (r#"{"range":"10.0.0.9-fd00::9/64"}"#, "ipam.range: \"10.0.0.9-fd00::9/64\": start 10.0.0.9 and end fd00::9 are of different address families"),
        (r#"{"range":"x-10.0.0.30/24"}"#, "ipam.range: \"x-10.0.0.30/24\": start \"x\" is not an IP address"),
        (r#"{"range":"10.0.0.9-10.0.0.30"}"#, "ipam.range: \"10.0.0.9-10.0.0.30\": \"10.0.0.30\" is not a CIDR"),
        (r#"{"range":"10.0.0.9-10.0.0.30/24","range_end":"10.0.0.40"}"#, "ipam.range_end: cannot be combined with the start-end/prefix form"),
        (r#"{"range":"10.0.0.0/31"}"#, "ipam.range: \"10.0.0.0/31\": subnet 10.0.0.0/31 is too small"),
        (r#"{"range":"10.0.0.0/24","range_start":"10.0.1.5"}"#, "ipam.range_start: 10.0.1.5 is not in range 10.0.0.0/24"),
        (r#"{"range":"10.0.0.0/24","range_start":"fd00::5"}"#, "ipam.range_start: fd00::5 is not of the address family of range 10.0.0.0/24"),
        (r#"{"range":"10.0.0.0/24","range_end":"ten"}"#, "ipam.range_end: \"ten\" is not an IP address"),
        (r#"{"range":"10.0.0.0/24","range_start":"10.0.0.50","range_end":"10.0.0.40"}"#, "ipam.range_end: 10.0.0.40 is before range_start 10.0.0.50"),
        (r#"{"range":"10.0.0.0/24","exclude":"10.0.0.5"}"#, "ipam.exclude: invalid type: string \"10.0.0.5\", expected a sequence"),
        (r#"{"range":"10.0.0.0/24","gateway":"192.168.2.1"}"#, "ipam.gateway: 192.168.2.1 is not inside the subnet of any range"),
        (r#"{"range":"10.0.0.0/24","gateway":"x"}"#, "ipam.gateway: \"x\" is not an IP address"),
        (r#"{"ipRanges":{"range":"10.0.0.0/24"}}"#, "ipam.ipRanges: invalid type: map, expected a sequence"),
        (r#"{"ipRanges":[{"range_start":"10.0.0.5"}]}"#, "ipam.ipRanges[0].range: missing"),
        (r#"{"ipRanges":[{"range":"10.0.0.0/24","range_start":"10.9.0.5"}]}"#, "ipam.ipRanges[0].range_start: 10.9.0.5 is not in range"),
        (r#"{"ipRanges":[]}"#, "ipam.ranges: no IP ranges specified"),
        (r#"{"range":"10.0.0.0/24","subnet":"10.1.0.0/24"}"#, "ipam.range: whereabouts-style ranges (range, ipRanges) cannot be combined with subnet or ranges"),
        (r#"{"ipRanges":[{"range":"10.0.0.0/24"}],"ranges":[[{"subnet":"10.1.0.0/24"}]]}"#, "ipam.ipRanges: whereabouts-style ranges"),
        (r#"{"range":"10.0.0.0/24","enable_overlapping_ranges":"no"}"#, "ipam.enable_overlapping_ranges: expected a boolean"),
    ];
    for (ipam, want) in cases {
        let (code, details) = err(&conf(ipam));
        assert_eq!(code, 7, "{ipam}");
        assert!(
            details.starts_with(want),
            "{ipam}\n got: {details}\nwant: {want}"
        );
    }
    let (code, details) = net_err(&conf(
        r#"{"ipRanges":[{"range":"10.0.0.0/24","exclude":["10.0.0.5","10.0.1.0/24"]}]}"#,
    ));
    assert_eq!(code, 7);
    assert!(
        details.starts_with("ipam.ipRanges[0].exclude[1]: exclude entry \"10.0.1.0/24\": not inside subnet 10.0.0.0/24"),
        "{details}"
    );
    let (code, details) = net_err(&conf(r#"{"range":"10.0.0.0/30","exclude":["10.0.0.2"]}"#));
    assert_eq!(code, 7);
    assert!(
        details.starts_with("ipam: exclude: covers every allocatable address"),
        "{details}"
    );
}

#[test]
fn whereabouts_fields_that_would_change_behaviour_are_refused() {
    for (key, _) in WHEREABOUTS_REFUSED {
        let value = match key {
            "enable_overlapping_ranges" => "true",
            "kubernetes" => r#"{"kubeconfig":"/etc/k"}"#,
            "addresses" => r#"[{"address":"10.0.0.5/24"}]"#,
            "dns" => r#"{"nameservers":["10.0.0.53"]}"#,
            _ => r#""x""#,
        };
        let (code, details) = err(&conf(&format!(
            r#"{{"range":"10.0.0.0/24","{key}":{value}}}"#
        )));
        assert_eq!(code, 2, "{key}: {details}");
        assert!(
            details.starts_with(&format!("ipam.{key}: ")),
            "{key}: {details}"
        );
    }
    // etcd_host is refused in any style, with the replacement named.
    let (code, details) = err(&conf(r#"{"subnet":"10.0.0.0/24","etcd_host":"e:2379"}"#));
    assert_eq!(code, 2);
    assert!(details.contains("endpoints"), "{details}");
    // dns only matters to whereabouts; host-local ignores it, so do we.
    assert!(parse(&conf(
        r#"{"subnet":"10.0.0.0/24","dns":{"nameservers":["1.1.1.1"]}}"#
    ))
    .is_ok());
    // Harmless whereabouts tuning is ignored.
    let c = parse(&conf(
        r#"{"range":"10.0.0.0/24","log_file":"/tmp/x","log_level":"debug","leader_lease_duration":1,
            "leader_renew_deadline":1,"leader_retry_period":1,"reconciler_cron_expression":"* * * * *",
            "sleep_for_race":0,"enable_overlapping_ranges":false}"#,
    ));
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn sticky_ttl_is_optional_and_validated() {
    let with = |v: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"ranges":[[{{"subnet":"10.0.0.0/24"}}]],"stickyTtlSeconds":{v}}}}}"#
        )
    };
    let off = parse(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}"#,
    )
    .expect("parses");
    assert_eq!(off.ipam.sticky_ttl, None);
    assert_eq!(off.options().sticky_ttl, None);
    assert_eq!(
        parse(&with("null"))
            .expect("null is absent")
            .ipam
            .sticky_ttl,
        None
    );
    let on = parse(&with("600")).expect("parses");
    assert_eq!(on.ipam.sticky_ttl, Some(Duration::from_secs(600)));
    assert_eq!(on.options().sticky_ttl, Some(Duration::from_secs(600)));
    assert!(parse(&with(&MAX_STICKY_TTL_SECONDS.to_string())).is_ok());
    for bad in [
        "0".to_string(),
        "-5".into(),
        "1.5".into(),
        r#""10m""#.into(),
        "true".into(),
        (MAX_STICKY_TTL_SECONDS + 1).to_string(),
    ] {
        let (code, details) = err(&with(&bad));
        assert_eq!(code, 7, "{bad}: {details}");
        assert!(
            details.contains("ipam.stickyTtlSeconds"),
            "{bad}: {details}"
        );
    }
}

#[test]
fn agent_ack_ms_defaults_to_250_at_most_the_budget_and_is_refused_outside_1_to_budget() {
    let conf = |extra: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"ranges":[[{{"subnet":"10.0.0.0/24"}}]]{extra}}}}}"#
        )
    };
    let ack = |extra: &str| parse(&conf(extra)).map(|c| c.ipam.agent_ack);
    assert_eq!(ack("").unwrap(), Duration::from_millis(250));
    assert_eq!(
        ack(r#","budgetMs":100"#).unwrap(),
        Duration::from_millis(100)
    );
    assert_eq!(
        ack(r#","agentAckMs":40"#).unwrap(),
        Duration::from_millis(40)
    );
    assert_eq!(
        ack(r#","budgetMs":500,"agentAckMs":500"#).unwrap(),
        Duration::from_millis(500)
    );
    for bad in [
        r#","agentAckMs":0"#,
        r#","budgetMs":500,"agentAckMs":501"#,
        r#","agentAckMs":-1"#,
        r#","agentAckMs":"fast""#,
    ] {
        let (code, details) = err(&conf(bad));
        assert_eq!(code, 7, "{bad}: {details}");
        assert!(details.contains("ipam.agentAckMs"), "{bad}: {details}");
    }
}

/// The network's validation error: code and text.
fn network_err(s: &str) -> (u32, String) {
    match parse(s).and_then(|c| c.network()) {
        Ok(n) => panic!("expected an error, built {n:?}"),
        Err(e) => (e.code(), e.to_string()),
    }
}

#[test]
fn ipv4_mapped_subnets_and_addresses_are_code_7_naming_the_field() {
    // The overlap of an IPv4 set and its mapped twin: refused.
    let (code, msg) = network_err(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
            [{"subnet":"10.7.0.0/24"}],[{"subnet":"::ffff:10.7.0.0/120"}]]}}"#,
    );
    assert_eq!(code, 7);
    assert!(
        msg.starts_with("ipam.ranges[1][0]: subnet ::ffff:10.7.0.0/120: overlaps the IPv4-mapped"),
        "{msg}"
    );
    let (code, msg) = network_err(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
            [{"subnet":"fd00::/64","rangeEnd":"::10.0.0.9"}]]}}"#,
    );
    assert_eq!(code, 7);
    assert!(
        msg.starts_with(
            "ipam.ranges[0][0]: rangeEnd \"::10.0.0.9\": is one of the IPv4-compatible"
        ),
        "{msg}"
    );
    let (code, msg) = network_err(
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
            [{"subnet":"10.0.0.0/24","exclude":["10.0.0.9","::ffff:10.0.0.8"]}]]}}"#,
    );
    assert_eq!(code, 7);
    assert!(msg.starts_with("ipam.ranges[0][0].exclude[1]: "), "{msg}");
    // Requested addresses from the config are refused as they are read.
    for (doc, field) in [
        (
            r#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"ips":["::ffff:10.0.0.5"]}},"ipam":{"subnet":"10.0.0.0/24"}}"#,
            "args.cni.ips[0]",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.0.0.4","::ffff:10.0.0.5/24"]},"ipam":{"subnet":"10.0.0.0/24"}}"#,
            "runtimeConfig.ips[1]",
        ),
    ] {
        let (code, msg) = err(doc);
        assert_eq!(code, 7, "{msg}");
        assert!(msg.starts_with(&format!("{field}: ")), "{msg}");
        assert!(msg.contains("IPv4-mapped"), "{msg}");
    }
}

/// `n` one-range IPv4 range sets, as JSON, each a distinct /30.
fn many_sets(n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"[{{"subnet":"10.{}.{}.0/30"}}]"#, i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn range_set_and_range_limits_are_code_7() {
    let over = MAX_RANGE_SETS + 1;
    // Runtime-supplied sets: refused before any is parsed.
    let doc = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","runtimeConfig":{{"ipRanges":[{}]}},"ipam":{{"subnet":"fd00::/64"}}}}"#,
        many_sets(over)
    );
    let (code, msg) = err(&doc);
    assert_eq!(code, 7);
    assert_eq!(
        msg,
        format!("runtimeConfig.ipRanges: ranges: {over} range sets, at most {MAX_RANGE_SETS} are accepted in one config")
    );
    // At the limit in runtimeConfig, one more from the config: the total.
    let doc = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","runtimeConfig":{{"ipRanges":[{}]}},"ipam":{{"subnet":"fd00::/64"}}}}"#,
        many_sets(MAX_RANGE_SETS)
    );
    let (code, msg) = err(&doc);
    assert_eq!(code, 7);
    assert!(
        msg.starts_with("ipam.ranges: ranges: 1025 range sets"),
        "{msg}"
    );
    // At the limit: accepted and validated.
    let doc = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"ranges":[{}]}}}}"#,
        many_sets(MAX_RANGE_SETS)
    );
    let net = parse(&doc).and_then(|c| c.network()).expect("1024 sets");
    assert_eq!(net.sets.len(), MAX_RANGE_SETS);
    // Ranges in one set.
    let ranges = (0..=MAX_RANGES_PER_SET)
        .map(|i| format!(r#"{{"subnet":"10.{}.{}.0/30"}}"#, i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    let doc = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"ranges":[[{ranges}]]}}}}"#);
    let (code, msg) = err(&doc);
    assert_eq!(code, 7);
    assert_eq!(
        msg,
        format!("ipam.ranges[0]: range set: {} ranges, at most {MAX_RANGES_PER_SET} are accepted in one set", MAX_RANGES_PER_SET + 1)
    );
}
