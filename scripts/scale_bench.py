#!/usr/bin/env python3
"""Helper of scripts/scale_bench.sh (standard library only).

Subcommands:

  run    inside `unshare --uts`, against a running etcd: for each owner count
         N (ascending), fills the network up to N owner records over N/30
         simulated nodes (examples/scale_fill), then measures the node-scoped
         and cluster-wide operations of ONE node (this UTS namespace takes its
         host name): etcd calls and bytes sent by etcd of each, from etcd's own
         /metrics. Writes one JSON report per N and prints the table.
  table  prints the Markdown table of JSON reports (one column pair per N).

Counting. etcd's Prometheus counters are scraped right before and right after
each operation (nothing else talks to this etcd meanwhile): "calls" is the
delta of `grpc_server_handled_total` summed over every service, method and
code; "bytes" is the delta of `etcd_network_client_grpc_sent_bytes_total`
(bytes of gRPC messages etcd sent to clients). A command run as a process
(plugin, ipamctl) is counted whole: connecting, reading the network's meta
record, the operation. An HTTP scrape is counted for that GET alone (the
exporter is already running and has served one request before).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# etcd /metrics scraping and the report header, shared with the cluster bench.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_bench import git_rev, machine_info, proc_cpu_ticks, scrape_metrics  # noqa: E402

NETWORK = "scale"
V4_RANGE = "10.64.0.0/14"
V6_RANGE = "fd00:64::/64"
CNI_VERSION = "1.1.0"
PER_NODE = 30
CPU_REPEAT = 40  # runs per etcd CPU figure (one scrape is under a clock tick)
CMD_TIMEOUT = 300.0  # seconds; a full scan at 50,000 owners takes a few

# The issue's targets, per operation: (max calls, max bytes, scope). None: no
# bound. "node" rows must also be flat (same calls; bytes within FLAT_BYTES)
# between the smallest and the largest N; "cluster" rows are expected to grow.
FLAT_BYTES = 0.05
FLAT_BYTES_ABS = 64  # revisions grow a varint byte or two between runs
# (key, label, max calls, max bytes, scope)
OPS = [
    ("add_warm", "warm plugin ADD (2nd ADD of the node)", 1, None, "node"),
    ("del", "plugin DEL", 1, None, "node"),
    ("gc", "plugin GC (30 valid attachments)", 3, 30_000, "node"),
    ("reconcile", "ipamctl reconcile --node --dry-run", 3, 30_000, "node"),
    ("release_node", "ipamctl release --node --dry-run", 3, 30_000, "node"),
    ("list_container", "ipamctl list --container", 1, None, "node"),
    ("list_node", "ipamctl list --node", None, None, "node"),
    ("agent_scrape", "agent GET /metrics", 3, 30_000, "node"),
    ("metrics_scrape", "ipamctl metrics GET /metrics", "sets", 200_000, "chunks"),
    ("metrics_scrape_churn", "ipamctl metrics GET /metrics after an ADD and a DEL", "sets",
     200_000, "chunks"),
    ("check", "ipamctl check", None, None, "cluster"),
]
INFO_OPS = [
    ("add_cold", "plugin ADD (1st of the node: cold node cache)"),
    ("metrics_scrape_cold", "ipamctl metrics: first GET /metrics (reads every chunk)"),
]

DEFINITIONS = {
    "etcd_cpu": "etcd's utime + stime (/proc/PID/stat) over CPU_REPEAT runs, per run: "
                "ipamctl metrics GETs with nothing written since (quiet_scrape_ms) and "
                "ipamctl show processes, which read every chunk (full_read_ms)",
    "calls": "delta of grpc_server_handled_total (every service, method and code) "
             "from etcd's /metrics, scraped right before and after the operation",
    "bytes": "delta of etcd_network_client_grpc_sent_bytes_total over the same window",
    "process operations": "plugin and ipamctl runs are counted whole (connect, meta read, "
                          "the operation)",
    "scrapes": "agent: the GET of /metrics after the agent served one ADD and one DEL of "
               "the network; ipamctl metrics (check off, the default): the first GET "
               "(information: reads every chunk), the second (nothing written since), and "
               "the third, after one ADD and one DEL of the measured node",
    "target 'sets'": "ipamctl metrics: at most 2 calls per range set + 1",
    "flat": "same calls, and bytes within 5% (or 64 bytes), at the smallest and the largest N "
            "(node-scoped rows)",
}


# ---------------------------------------------------------------- helpers

class Counter:
    """etcd's work during one operation."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def __enter__(self):
        self.before = scrape_metrics(self.endpoint)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        secs = time.monotonic() - self.t0
        after = scrape_metrics(self.endpoint)
        (c0, b0), (c1, b1) = self.before, after
        by = {}
        for k in set(c0) | set(c1):
            d = int(round(c1.get(k, 0) - c0.get(k, 0)))
            if d:
                by["/".join(k)] = d
        self.result = {"calls": sum(by.values()), "bytes": int(round(b1 - b0)),
                       "by_method": by, "secs": round(secs, 3)}
        return False


def run(cmd, stdin=None, env=None, what=None):
    p = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=CMD_TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError("%s failed (exit %d):\nstdout: %s\nstderr: %s" % (
            what or " ".join(cmd), p.returncode, p.stdout.decode(errors="replace")[-2000:],
            p.stderr.decode(errors="replace")[-2000:]))
    return p.stdout


def http_get(url):
    with urllib.request.urlopen(url, timeout=CMD_TIMEOUT) as r:
        return r.read().decode()


def wait_line(path, needle, proc, secs=30):
    """The first line of a log file that contains `needle`."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if needle in line:
                        return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(path) as f:
        log = f.read()[-2000:]
    raise RuntimeError("no %r in %s (process exit %s):\n%s" % (needle, path, proc.poll(), log))


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_name(i):
    """The fill's name of node i (examples/scale_fill.rs)."""
    return "scale-node-%05d" % i


def fnv1a(name):
    """The node seed (src/allocator/geometry.rs, node_seed_from)."""
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x00000100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def container_ids(i, per_node):
    """The fill's container IDs of node i (examples/scale_fill.rs)."""
    return ["%016x%048x" % (fnv1a(node_name(i)), j) for j in range(per_node)]


# ---------------------------------------------------------------- run

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = os.path.abspath(a.work)
        self.node_dir = os.path.join(self.work, "node")
        os.makedirs(self.node_dir, exist_ok=True)
        self.sock = os.path.join(self.work, "agent.sock")
        self.conf = self.write_conf("net.conf", {"agent": "off"})
        self.agent_conf = self.write_conf("net-agent.conf",
                                          {"agent": "required", "agentSocket": self.sock})
        self.cni_env = dict(os.environ, CNI_NETNS="/dev/null", CNI_IFNAME="eth0",
                            CNI_PATH=os.path.dirname(os.path.abspath(a.plugin)))
        self.filled_nodes = 0

    def write_conf(self, name, extra):
        ipam = {"type": "host-etcd", "ranges": [[{"subnet": V4_RANGE}], [{"subnet": V6_RANGE}]],
                "endpoints": [self.a.endpoint], "dataDir": self.node_dir}
        ipam.update(extra)
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            json.dump({"cniVersion": CNI_VERSION, "name": NETWORK, "ipam": ipam}, f)
        return path

    def counted(self, fn):
        with Counter(self.a.endpoint) as c:
            fn()
        return c.result

    def fill(self, nodes):
        """Nodes [filled, nodes) get PER_NODE owners each."""
        todo = nodes - self.filled_nodes
        if todo <= 0:
            return None
        out = run([self.a.fill, self.conf, "--first-node", str(self.filled_nodes),
                   "--nodes", str(todo), "--per-node", str(PER_NODE),
                   "--concurrency", str(self.a.concurrency)], what="scale_fill")
        self.filled_nodes = nodes
        return json.loads(out.decode().strip().splitlines()[-1])

    def plugin(self, command, cid=None, conf=None, stdin=None):
        env = dict(self.cni_env, CNI_COMMAND=command)
        if cid:
            env.update(CNI_CONTAINERID=cid,
                       CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" % cid)
        if stdin is None:
            with open(conf or self.conf, "rb") as f:
                stdin = f.read()
        return run([self.a.plugin], stdin=stdin, env=env, what="host-etcd %s %s" % (command, cid))

    def ipamctl(self, *args):
        return run([self.a.ipamctl, "--config", self.conf, "--json"] + list(args),
                   what="ipamctl " + " ".join(args))

    def node_records(self, node):
        return json.loads(self.ipamctl("list", "--node", node))

    def measure(self, n_target):
        a = self.a
        nodes = max(1, round(n_target / PER_NODE))
        print("filling to %d nodes x %d owners ..." % (nodes, PER_NODE), file=sys.stderr)
        t0 = time.monotonic()
        fill = self.fill(nodes)
        fill_secs = time.monotonic() - t0
        node = a.node
        cids = container_ids(a.node_index, PER_NODE)
        ops, checks = {}, {}

        def expect(what, ok, detail=""):
            checks[what] = bool(ok)
            if not ok:
                raise RuntimeError("check failed: %s %s" % (what, detail))

        listed = self.node_records(node)
        expect("the node lists %d records" % PER_NODE, len(listed) == PER_NODE, len(listed))

        # Plugin ADD, ADD, DEL, DEL as a runtime on this node runs them; the
        # first ADD starts without a node cache file (cold).
        for f in os.listdir(self.node_dir):
            if f.startswith("node-cache."):
                os.remove(os.path.join(self.node_dir, f))
        run_id = "%x" % int(time.time())
        c1, c2 = "bench-%s-1" % run_id, "bench-%s-2" % run_id
        ops["add_cold"] = self.counted(lambda: self.plugin("ADD", c1))
        res = {}
        ops["add_warm"] = self.counted(lambda: res.update(add=self.plugin("ADD", c2)))
        ips = [x["address"] for x in json.loads(res["add"])["ips"]]
        expect("warm ADD got 2 addresses", len(ips) == 2, ips)
        ops["del"] = self.counted(lambda: self.plugin("DEL", c2))
        self.plugin("DEL", c1)
        expect("the node is back to %d records" % PER_NODE,
               len(self.node_records(node)) == PER_NODE)

        # GC with this node's attachments valid (cniVersion 1.1.0).
        valid = [{"containerID": c, "ifname": "eth0"} for c in cids]
        with open(self.conf) as f:
            gc_conf = json.load(f)
        gc_conf["cni.dev/valid-attachments"] = valid
        ops["gc"] = self.counted(lambda: self.plugin("GC", stdin=json.dumps(gc_conf).encode()))
        expect("GC released nothing", len(self.node_records(node)) == PER_NODE)

        valid_file = os.path.join(self.work, "valid.json")
        with open(valid_file, "w") as f:
            json.dump(valid, f)
        out = {}
        ops["reconcile"] = self.counted(lambda: out.update(r=self.ipamctl(
            "reconcile", "--node", node, "--dry-run", "--no-cache", "--valid", valid_file)))
        rec = json.loads(out["r"])
        expect("reconcile keeps the node's %d records" % PER_NODE,
               rec["release"] == [] and len(rec["keep"]) == PER_NODE, rec)
        ops["release_node"] = self.counted(lambda: out.update(r=self.ipamctl(
            "release", "--node", node, "--dry-run")))
        expect("release --node --dry-run lists %d" % PER_NODE,
               len(json.loads(out["r"])) == PER_NODE)
        ops["list_container"] = self.counted(lambda: out.update(r=self.ipamctl(
            "list", "--container", cids[0])))
        expect("list --container finds it", cids[0] in out["r"].decode())
        ops["list_node"] = self.counted(lambda: out.update(r=self.ipamctl("list", "--node", node)))
        expect("list --node lists %d" % PER_NODE, len(json.loads(out["r"])) == PER_NODE)

        ops["agent_scrape"], agent_text = self.agent_scrape(node)
        mine = [l for l in agent_text.splitlines()
                if l.startswith("host_etcd_agent_node_owner_records{")]
        expect("the agent exports its node's %d records" % PER_NODE,
               len(mine) == 1 and float(mine[0].rsplit(" ", 1)[1]) == PER_NODE, mine)
        expect("the agent exports no cluster figures", "host_etcd_ipam_" not in agent_text)

        (ops["metrics_scrape_cold"], ops["metrics_scrape"], ops["metrics_scrape_churn"],
         metrics_text, scrape_cpu) = self.metrics_scrape()
        expect("ipamctl metrics answers every range",
               metrics_text.count("host_etcd_ipam_addresses_used{") == 2)

        ops["check"] = self.counted(lambda: out.update(r=self.ipamctl("check")))
        show = json.loads(self.ipamctl("show"))
        return {
            "n_target": n_target, "nodes": nodes, "owners": nodes * PER_NODE,
            "measured_node": node, "fill": fill, "fill_secs": round(fill_secs, 1),
            "show": show, "ops": ops, "checks": checks, "etcd_cpu": scrape_cpu,
        }

    def agent_scrape(self, node):
        """The agent in this UTS namespace: one ADD + DEL through it, then
        one counted GET /metrics."""
        log_path = os.path.join(self.work, "agent.log")
        with open(log_path, "w") as log:
            agent = subprocess.Popen([self.a.plugin, "agent", "--socket", self.sock,
                                      "--metrics-listen", "127.0.0.1:0"],
                                     stdout=log, stderr=log)
        try:
            addr = json.loads(wait_line(log_path, "metrics_listening", agent))["address"]
            wait_line(log_path, '"listening"', agent)
            cid = "bench-agent-%x" % int(time.time())
            self.plugin("ADD", cid, conf=self.agent_conf)
            self.plugin("DEL", cid, conf=self.agent_conf)
            box = {}
            r = self.counted(lambda: box.update(t=http_get("http://%s/metrics" % addr)))
            return r, box["t"]
        finally:
            stop(agent)

    def etcd_cpu_ms(self, times, op):
        """etcd's utime + stime per run of `op`, over `times` runs, in ms."""
        if not self.a.etcd_pid:
            return None
        t0 = proc_cpu_ticks(self.a.etcd_pid)
        for _ in range(times):
            op()
        ticks = proc_cpu_ticks(self.a.etcd_pid) - t0
        return round(ticks * 1000.0 / os.sysconf("SC_CLK_TCK") / times, 2)

    def metrics_scrape(self):
        """ipamctl metrics (check off): three counted GETs of /metrics: the
        first (it reads every chunk), the second (nothing written since:
        it reads what changed, nothing), and one after an ADD and a DEL of
        the measured node (its chunks written twice)."""
        log_path = os.path.join(self.work, "metrics.log")
        with open(log_path, "w") as log:
            exporter = subprocess.Popen([self.a.ipamctl, "--config", self.conf, "metrics",
                                         "--listen", "127.0.0.1:0"], stdout=log, stderr=log)
        try:
            line = wait_line(log_path, "serving metrics", exporter)
            url = line.strip().rsplit(" ", 1)[1]
            box = {}
            cold = self.counted(lambda: box.update(t=http_get(url)))
            quiet = self.counted(lambda: box.update(t=http_get(url)))
            cid = "bench-metrics-%x" % int(time.time())
            self.plugin("ADD", cid)
            self.plugin("DEL", cid)
            churn = self.counted(lambda: box.update(t=http_get(url)))
            # etcd's CPU per scrape, over many: a quiet scrape (it still
            # walks every chunk key of the ranges, to filter them) against a
            # read of every chunk (`ipamctl show`, whole processes).
            box["cpu"] = {
                "quiet_scrape_ms": self.etcd_cpu_ms(CPU_REPEAT, lambda: http_get(url)),
                "full_read_ms": self.etcd_cpu_ms(CPU_REPEAT, lambda: self.ipamctl("show")),
                "repeat": CPU_REPEAT,
            }
            return cold, quiet, churn, box["t"], box["cpu"]
        finally:
            stop(exporter)


def run_main(a):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(["hostname", a.node], check=True)
    if socket.gethostname() != a.node:
        raise RuntimeError("host name is %r, wanted %r" % (socket.gethostname(), a.node))
    a.node_index = int(a.node.rsplit("-", 1)[1])
    counts = sorted(a.owners)
    if round(counts[0] / PER_NODE) <= a.node_index:
        raise RuntimeError("node %s is not among the %d nodes of N=%d"
                           % (a.node, round(counts[0] / PER_NODE), counts[0]))
    b = Bench(a)
    reports = []
    os.makedirs(a.out, exist_ok=True)
    for n in counts:
        r = b.measure(n)
        r.update({"schema": 1, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "git": git_rev(a.repo, ("src", "examples", "Cargo.toml", "Cargo.lock")), "machine": machine_info(a.etcd_bin),
                  "params": {"network": NETWORK, "ranges": [V4_RANGE, V6_RANGE],
                             "per_node": PER_NODE, "cni_version": CNI_VERSION,
                             "chunk_bits": 8, "fill": "examples/scale_fill (allocate_batch "
                             "of 30 per node, one allocator per node name)",
                             "fill_concurrency": a.concurrency},
                  "definitions": DEFINITIONS})
        path = os.path.join(a.out, "n%d.json" % n)
        with open(path, "w") as f:
            json.dump(r, f, indent=2)
            f.write("\n")
        print("wrote %s" % path, file=sys.stderr)
        reports.append(r)
    print(table(reports))
    return 0 if all(v["met"] is not False for v in verdicts(reports).values()) else 3


# ---------------------------------------------------------------- output

def kb(v):
    if v < 1000:
        return "%d B" % v
    return "%.1f KB" % (v / 1000) if v < 1_000_000 else "%.2f MB" % (v / 1e6)


def target_of(r, key):
    for k, _, calls, nbytes, scope in OPS:
        if k == key:
            if calls == "sets":
                calls = 2 * len(r["params"]["ranges"]) + 1
            return calls, nbytes, scope
    return None, None, "info"


def verdicts(reports):
    """Per operation: target met at every N (and flat where it must be)."""
    out = {}
    lo, hi = reports[0], reports[-1]
    for key, _, _, _, _ in OPS:
        calls, nbytes, scope = target_of(hi, key)
        ok, why = True, []
        for r in reports:
            o = r["ops"][key]
            if calls is not None and o["calls"] > calls:
                ok = False
                why.append("%d calls at N = %s" % (o["calls"], format(r["owners"], ",")))
            if nbytes is not None and o["bytes"] > nbytes:
                ok = False
                why.append("%s at N = %s" % (kb(o["bytes"]), format(r["owners"], ",")))
        if scope in ("node", "chunks") and len(reports) > 1:
            a, b = lo["ops"][key], hi["ops"][key]
            slack = max(FLAT_BYTES * a["bytes"], FLAT_BYTES_ABS)
            flat = a["calls"] == b["calls"] and abs(b["bytes"] - a["bytes"]) <= slack
            if not flat and scope == "node":
                ok = False
                why.append("not flat")
        else:
            flat = None
        met = None if calls is None and nbytes is None and scope != "node" else ok
        out[key] = {"met": met, "why": why, "flat": flat}
    return out


def table(reports):
    v = verdicts(reports)
    head = "| operation (one node: %s) | " % reports[0]["measured_node"]
    head += " | ".join("N = %s: calls | bytes" % format(r["owners"], ",") for r in reports)
    head += " | target | met |"
    lines = [head, "|---|" + "---:|---:|" * len(reports) + "---|---|"]
    rows = [(k, label) for k, label, _, _, _ in OPS] + INFO_OPS
    for key, label in rows:
        cells = []
        for r in reports:
            o = r["ops"][key]
            cells.append("%d | %s" % (o["calls"], kb(o["bytes"])))
        calls, nbytes, scope = target_of(reports[-1], key)
        t = []
        if calls is not None:
            t.append("≤ %d call%s" % (calls, "" if calls == 1 else "s"))
        if nbytes is not None:
            t.append("≤ %s" % kb(nbytes))
        if scope == "node":
            t.append("flat")
        if scope == "cluster":
            t.append("O(cluster), no target")
        if scope == "info":
            t.append("(information)")
        verdict = v.get(key, {"met": None})
        met = {True: "yes", False: "**no** (%s)" % ", ".join(verdict.get("why", [])),
               None: "—"}[verdict["met"]]
        lines.append("| %s | %s | %s | %s |" % (label, " | ".join(cells), ", ".join(t), met))
    lines.append("")
    for r in reports:
        lines.append("N = %s (%s nodes): stored chunks per range set %s; owner records %s "
                     "(+ as many index entries); fill %.0f s" % (
                         format(r["owners"], ","), format(r["nodes"], ","),
                         " + ".join(str(x["chunks"]) for x in r["show"]),
                         format(r["owners"], ","), r["fill_secs"]))
        cpu = r.get("etcd_cpu") or {}
        if cpu.get("quiet_scrape_ms") is not None:
            lines.append("N = %s: etcd CPU per ipamctl metrics scrape with nothing written since "
                         "%.2f ms, per read of every chunk (ipamctl show) %.2f ms (%d runs each)"
                         % (format(r["owners"], ","), cpu["quiet_scrape_ms"],
                            cpu["full_read_ms"], cpu["repeat"]))
    return "\n".join(lines)


def table_main(a):
    reports = []
    for p in a.files:
        with open(p) as f:
            reports.append(json.load(f))
    reports.sort(key=lambda r: r["owners"])
    print(table(reports))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="sub", required=True)
    r = sub.add_parser("run")
    r.add_argument("--owners", type=lambda s: [int(x) for x in s.split(",")], required=True)
    r.add_argument("--node", required=True)
    r.add_argument("--endpoint", required=True)
    r.add_argument("--plugin", required=True)
    r.add_argument("--ipamctl", required=True)
    r.add_argument("--fill", required=True)
    r.add_argument("--concurrency", type=int, default=16)
    r.add_argument("--etcd-bin", default="etcd")
    r.add_argument("--etcd-pid", type=int, default=0,
                   help="etcd's process id: its CPU per scrape is measured too")
    r.add_argument("--repo", default=".")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    a = ap.parse_args()
    try:
        return {"run": run_main, "table": table_main}[a.sub](a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
