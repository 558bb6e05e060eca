#!/usr/bin/env python3
"""Helper of scripts/cluster_bench.sh (standard library only).

Subcommands:

  scenario  one scenario against a running etcd: NODES simulated nodes
            (each a UTS namespace with its own hostname), P concurrent plugin
            processes per node, N ADDs then N DELs per node; host-etcd, then
            host-local with the same shape, then the raw CAS baseline of
            `ipamctl bench`. Writes one JSON report and prints a table.
  node      (internal) one simulated node, run inside `unshare --uts`: sets
            the hostname, then runs the phases the parent sends on stdin.
  table     prints the Markdown table of one or more JSON reports.
  rollout   prints the rollout table (ADD phase: calls per ADD, failures,
            duplicates, p50 / p99) of one or more JSON reports.
  plot      writes an SVG of one or more JSON reports.

Counting. etcd's own Prometheus counters (`grpc_server_handled_total` of
service etcdserverpb.KV) are scraped before and after each phase; "etcd
txns per op" is (Txn + Range calls) / successful operations. etcd CPU is
utime + stime of the etcd process (/proc/PID/stat, in CLK_TCK ticks) over the
phase. Plugin CPU is the user + system time of the plugin processes
(RUSAGE_CHILDREN of each node helper). Latency is per plugin process, from
spawn to exit, as the node helper sees it.
"""

import argparse
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

NETWORK = "cbench"
V4_RANGE = "10.77.0.0/16"
V6_RANGE = "fd00:77::/64"
CNI_VERSION = "1.0.0"
KEEP_ERRORS = 3  # failures recorded per node and phase
PROC_TIMEOUT = 60.0  # seconds; a plugin process running longer is killed, counted failed


# Stored in every report, so a JSON file explains itself.
DEFINITIONS = {
    "ok_per_sec": "successful plugin processes / wall time of the phase (all nodes)",
    "latency_ms": "per plugin process, spawn to exit, seen by the node helper",
    "etcd.txns_per_op": "(Txn + Range calls of etcdserverpb.KV in grpc_server_handled_total, "
                        "scraped before and after the phase) / successful operations",
    "etcd.cpu_ms_per_op": "etcd process utime+stime over the phase (/proc/PID/stat, CLK_TCK) "
                          "/ successful operations",
    "plugin_cpu_ms_per_op": "user+system CPU of the plugin processes (RUSAGE_CHILDREN of the "
                            "node helpers) / successful operations",
    "raw_cas": "ipamctl bench raw phase (one client per nodes x procs, each a single-key "
               "compare-mod_revision-and-put of 128 bytes); etcd_cpu_ms is the etcd CPU in the "
               "last raw.secs seconds before ipamctl exited (sampled every 10 ms)",
    "duplicate_addresses": "ADD results (all nodes) minus distinct addresses; must be 0",
}


# ---------------------------------------------------------------- helpers

def percentile(sorted_vals, q):
    """Nearest-rank percentile of a sorted list (q in 0..100)."""
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def latency_ms(us):
    s = sorted(us)
    if not s:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    return {"p50": percentile(s, 50) / 1000, "p99": percentile(s, 99) / 1000,
            "max": s[-1] / 1000, "mean": sum(s) / len(s) / 1000}


def per(a, b):
    return a / b if b else None


def proc_cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime, stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def scrape_metrics(endpoint):
    """From etcd's /metrics: grpc_server_handled_total by (service, method,
    code), and etcd_network_client_grpc_sent_bytes_total (bytes sent to
    clients, summed)."""
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as r:
        text = r.read().decode()
    calls, sent = {}, 0.0
    for line in text.splitlines():
        if line.startswith("etcd_network_client_grpc_sent_bytes_total"):
            sent += float(line.rsplit(" ", 1)[1])
            continue
        if not line.startswith("grpc_server_handled_total{"):
            continue
        labels, value = line[len("grpc_server_handled_total{"):].rsplit("}", 1)
        lab = {}
        for part in labels.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                lab[k] = v.strip('"')
        key = (lab.get("grpc_service", "?"), lab.get("grpc_method", "?"), lab.get("grpc_code", "?"))
        calls[key] = calls.get(key, 0) + float(value)
    return calls, sent


def scrape(endpoint):
    """grpc_server_handled_total by (service, method, code) from /metrics."""
    return scrape_metrics(endpoint)[0]


def metrics_delta(before, after):
    """KV calls per method, non-OK codes, and calls of other services."""
    kv, other, non_ok = {}, {}, 0
    for key in set(before) | set(after):
        d = int(round(after.get(key, 0) - before.get(key, 0)))
        if d == 0:
            continue
        service, method, code = key
        if code != "OK":
            non_ok += d
        if service == "etcdserverpb.KV":
            kv[method] = kv.get(method, 0) + d
        else:
            name = service + "/" + method
            other[name] = other.get(name, 0) + d
    return {"kv": kv, "non_ok": non_ok, "other": other}


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine_info(etcd_bin):
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        etcd_version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        etcd_version = "?"
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": os.uname().release, "etcd_version": etcd_version,
            "clk_tck": os.sysconf("SC_CLK_TCK")}


def git_rev(repo, paths=("src", "Cargo.toml", "Cargo.lock")):
    """The checkout's short revision, and whether `paths` have uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True,
                               timeout=10).stdout.strip() != ""
        return {"rev": rev or "?", "src_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"rev": "?", "src_dirty": None}


def shown_path(path, repo):
    """A path inside the repository relative to it (reports carry no checkout paths)."""
    rel = os.path.relpath(path, os.path.abspath(repo))
    return path if rel.startswith("..") else rel


def net_config(kind, endpoint, data_dir, v4_range=V4_RANGE, v6_range=V6_RANGE, name=NETWORK):
    ipam = {"type": kind, "ranges": [[{"subnet": v4_range}], [{"subnet": v6_range}]],
            "routes": [{"dst": "0.0.0.0/0"}]}
    if kind == "host-etcd":
        ipam["endpoints"] = [endpoint]
    if data_dir:
        ipam["dataDir"] = data_dir
    return {"cniVersion": CNI_VERSION, "name": name, "ipam": ipam}


# ---------------------------------------------------------------- node

def node_main(a):
    """One simulated node: inside its own UTS namespace."""
    subprocess.run(["hostname", a.hostname], check=True)
    with open("/proc/sys/kernel/hostname") as f:
        seen = f.read().strip()
    if seen != a.hostname or socket.gethostname() != a.hostname:
        print(json.dumps({"fatal": "hostname is %r, wanted %r" % (seen, a.hostname)}), flush=True)
        return 1
    with open(a.config, "rb") as f:
        conf = f.read()
    agent = None
    if a.agent_socket:
        # This node's agent, in this node's UTS namespace (its host name).
        log = open(a.agent_socket + ".log", "w")
        agent = subprocess.Popen([a.plugin, "agent", "--socket", a.agent_socket],
                                 stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not os.path.exists(a.agent_socket):
            if agent.poll() is not None or time.monotonic() > deadline:
                print(json.dumps({"fatal": "agent did not start (see %s.log)" % a.agent_socket}),
                      flush=True)
                return 1
            time.sleep(0.02)
    try:
        return node_loop(a, conf)
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()


def node_loop(a, conf):
    """The phases the parent sends, on this node."""
    env = dict(os.environ, CNI_NETNS="/dev/null", CNI_IFNAME="eth0", CNI_PATH=a.cni_path)
    ids = ["%s-%s-%d" % (a.id_prefix, a.hostname, i) for i in range(a.count)]
    print(json.dumps({"ready": a.hostname}), flush=True)

    def one(cmd, cid):
        e = dict(env, CNI_COMMAND=cmd, CNI_CONTAINERID=cid)
        t = time.perf_counter()
        try:
            p = subprocess.run([a.plugin], input=conf, env=e, capture_output=True,
                               timeout=PROC_TIMEOUT)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as x:
            rc, out, err = "timeout", x.stdout or b"", x.stderr or b""
        us = int((time.perf_counter() - t) * 1e6)
        ips, problem = [], None
        if rc != 0:
            problem = "exit %s" % rc
        elif cmd == "ADD":
            try:
                ips = [x["address"] for x in json.loads(out)["ips"]]
                if len(ips) != 2:
                    problem = "result has %d ips, want 2 (dual-stack)" % len(ips)
            except (ValueError, KeyError, TypeError) as x:
                problem = "unparsable result (%s)" % x
        if problem:
            return us, None, {"node": a.hostname, "container": cid, "command": cmd,
                              "problem": problem,
                              "stdout": out.decode(errors="replace")[:600],
                              "stderr": err.decode(errors="replace")[:600]}
        return us, ips, None

    def phase(cmd, todo):
        lock = threading.Lock()
        queue = list(reversed(todo))
        lat, ips, errors = [], [], []
        counts = {"ok": 0, "failed": 0}

        def worker():
            while True:
                with lock:
                    if not queue:
                        return
                    cid = queue.pop()
                us, got, err = one(cmd, cid)
                with lock:
                    lat.append(us)
                    if err is None:
                        counts["ok"] += 1
                        ips.extend(got)
                    else:
                        counts["failed"] += 1
                        if len(errors) < KEEP_ERRORS:
                            errors.append(err)

        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        threads = [threading.Thread(target=worker) for _ in range(a.procs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return {"command": cmd, "ok": counts["ok"], "failed": counts["failed"], "latency_us": lat,
                "ips": ips, "errors": errors, "plugin_cpu_s": cpu}

    for line in sys.stdin:
        cmd = line.strip()
        if cmd in ("ADD", "DEL"):
            r = phase(cmd, ids)
        elif cmd == "WARM":  # one ADD + DEL outside the measured phases
            wid = ["%s-%s-warmup" % (a.id_prefix, a.hostname)]
            r = {"add": phase("ADD", wid), "del": phase("DEL", wid)}
        elif cmd == "QUIT":
            return 0
        else:
            r = {"fatal": "unknown command %r" % cmd}
        print(json.dumps(r), flush=True)
    return 0


# ---------------------------------------------------------------- scenario

class Nodes:
    """NODES node helpers, each in its own UTS namespace, driven over pipes."""

    def __init__(self, a, kind, plugin, work, endpoint):
        self.procs = []
        conf_dir = os.path.join(work, kind)
        os.makedirs(conf_dir, exist_ok=True)
        for n in range(1, a.nodes + 1):
            host = "node%d" % n
            data_dir = None
            if kind == "host-local" or a.node_data_dir:
                data_dir = os.path.join(conf_dir, "data-" + host)
            path = os.path.join(conf_dir, host + ".json")
            # ADDs only (no DEL phase to empty the network again): every
            # mode gets a network of its own, so each starts fresh.
            name = NETWORK + "-" + kind if a.no_del else NETWORK
            conf = net_config("host-etcd" if kind == "host-etcd-agent" else kind, endpoint,
                              data_dir, a.v4_range, a.v6_range, name)
            sock = ""
            if kind == "host-etcd-agent":
                sock = os.path.join(conf_dir, "agent-%s.sock" % host)
                conf["ipam"]["agent"] = "required"
                conf["ipam"]["agentSocket"] = sock
            elif kind == "host-etcd":
                conf["ipam"]["agent"] = "off"
            with open(path, "w") as f:
                json.dump(conf, f)
            cmd = ["unshare", "--uts", "--", sys.executable, os.path.abspath(__file__), "node",
                   "--hostname", host, "--plugin", plugin, "--config", path,
                   "--count", str(a.count), "--procs", str(a.procs),
                   "--id-prefix", "%s-%s" % (a.run_id, kind), "--cni-path", a.cni_path,
                   "--agent-socket", sock]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)
            self.procs.append(p)
        try:
            for p in self.procs:
                self._read(p, "ready")
        except BaseException:
            self.abort()
            raise

    def _read(self, p, what):
        line = p.stdout.readline()
        if not line:
            raise RuntimeError("node helper exited (rc %s) while waiting for %s" % (p.wait(), what))
        r = json.loads(line)
        if "fatal" in r:
            raise RuntimeError("node helper: " + r["fatal"])
        return r

    def send(self, cmd, only_first=False):
        targets = self.procs[:1] if only_first else self.procs
        for p in targets:
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        return [self._read(p, cmd) for p in targets]

    def abort(self):
        """Kills every node helper with its plugin processes (each helper
        leads its own process group)."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write("QUIT\n")
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=PROC_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def summarize(results, secs):
    lat = [x for r in results for x in r["latency_us"]]
    ok = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    cpu = sum(r["plugin_cpu_s"] for r in results)
    errors = [e for r in results for e in r["errors"]][:5]
    return {"processes": ok + failed, "ok": ok, "failed": failed, "secs": secs,
            "ok_per_sec": per(ok, secs), "latency_ms": latency_ms(lat),
            "plugin_cpu_ms_per_op": per(cpu * 1000, ok), "first_errors": errors}


def run_plugin(a, kind, plugin, endpoint, etcd_pid, tck):
    """ADD phase then DEL phase of one plugin over all nodes."""
    nodes = Nodes(a, kind, plugin, a.work, endpoint)
    out = {}
    done = False
    try:
        warm = nodes.send("WARM", only_first=True)[0]
        for w in (warm["add"], warm["del"]):
            if w["failed"]:
                raise RuntimeError("%s warm-up %s failed: %s" % (kind, w["command"], w["errors"]))
        all_ips = []
        for cmd in ("ADD",) if a.no_del else ("ADD", "DEL"):
            m0 = scrape(endpoint) if etcd_pid else None
            c0 = proc_cpu_ticks(etcd_pid) if etcd_pid else None
            t0 = time.monotonic()
            results = nodes.send(cmd)
            secs = time.monotonic() - t0
            c1 = proc_cpu_ticks(etcd_pid) if etcd_pid else None
            m1 = scrape(endpoint) if etcd_pid else None
            s = summarize(results, secs)
            if etcd_pid:
                d = metrics_delta(m0, m1)
                txn, rng = d["kv"].get("Txn", 0), d["kv"].get("Range", 0)
                cpu_ms = (c1 - c0) * 1000 / tck
                s["etcd"] = {"kv_calls": d["kv"], "txn_plus_range": txn + rng,
                             "txns_per_op": per(txn + rng, s["ok"]),
                             "txn_per_op": per(txn, s["ok"]), "range_per_op": per(rng, s["ok"]),
                             "non_ok_calls": d["non_ok"], "other_calls": d["other"],
                             "cpu_ms": cpu_ms, "cpu_ms_per_op": per(cpu_ms, s["ok"])}
            if cmd == "ADD":
                all_ips = [ip for r in results for ip in r["ips"]]
            out[cmd.lower()] = s
        if kind in ("host-etcd", "host-etcd-agent"):
            out["duplicate_addresses"] = len(all_ips) - len(set(all_ips))
        done = True
    finally:
        if done:
            nodes.close()
        else:
            nodes.abort()
    return out


def run_raw(a, endpoint, etcd_pid, tck):
    """`ipamctl bench` at the same total concurrency; only its raw CAS phase
    is used. ipamctl runs its in-process allocator first and the raw phase
    last, so etcd's CPU is sampled every 10 ms and the raw figure is the CPU
    of the last `raw.secs` seconds before ipamctl exited."""
    clients = a.nodes * a.procs
    count = a.raw_count or max(1000, min(4000, clients * 100))
    cmd = [a.ipamctl, "--endpoints", endpoint, "bench", "--network-per-run", "--json",
           "--no-naive", "-c", str(clients), "-n", str(count),
           "--baseline-secs", str(a.raw_secs)]
    samples, stop = [], threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append((time.monotonic(), proc_cpu_ticks(etcd_pid)))
            time.sleep(0.01)

    m0 = scrape(endpoint)
    th = threading.Thread(target=sampler)
    th.start()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        t_exit = time.monotonic()
    finally:
        stop.set()
        th.join()
    m1 = scrape(endpoint)
    if p.returncode != 0:
        return {"command": " ".join(cmd), "error": (p.stdout + p.stderr)[-1000:]}  # full path: a clue
    rep = json.loads(p.stdout)
    raw = rep["raw"]
    start = t_exit - raw["secs"]
    before = [c for t, c in samples if t <= start]
    c_start = before[-1] if before else samples[0][1]
    c_end = samples[-1][1]
    cpu_ms = (c_end - c_start) * 1000 / tck
    d = metrics_delta(m0, m1)
    ours = rep["ours"]
    shown = " ".join([shown_path(a.ipamctl, a.repo)] + cmd[1:])
    return {"command": shown, "clients": clients,
            "txns": raw["txns"], "errors": raw["errors"], "secs": raw["secs"],
            "txns_per_sec": raw["txns_per_sec"], "latency_ms": raw["latency_ms"],
            "etcd_cpu_ms": cpu_ms, "etcd_cpu_ms_per_txn": per(cpu_ms, raw["txns"]),
            "whole_run_kv_calls": d["kv"],
            "in_process_allocator": {
                "allocations": ours["allocations"], "errors": ours["errors"],
                "allocations_per_sec": ours["allocations_per_sec"],
                "round_trips_per_allocation": ours["round_trips_per_allocation"],
                "latency_ms": ours["latency_ms"]}}


def scenario_main(a):
    # SIGTERM unwinds like Ctrl-C, so node helpers are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tck = os.sysconf("SC_CLK_TCK")
    a.work = os.path.abspath(a.work)
    a.plugin = os.path.abspath(a.plugin)
    a.host_local = a.host_local and os.path.abspath(a.host_local)
    a.run_id = "r%d" % int(time.time())
    report = {
        "schema": 1, "label": a.label, "scenario": "n%d-p%d" % (a.nodes, a.procs),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_rev(a.repo), "machine": machine_info(a.etcd_bin),
        "params": {"nodes": a.nodes, "procs_per_node": a.procs, "count_per_node": a.count,
                   "ranges": [a.v4_range, a.v6_range], "cni_version": CNI_VERSION,
                   "node_data_dir": a.node_data_dir, "agent": a.agent,
                   "etcd_data_fs": a.etcd_fs,
                   "plugin": shown_path(a.plugin, a.repo), "host_local": a.host_local},
        "loadavg_before": loadavg(),
        "definitions": DEFINITIONS,
    }
    print("scenario %s: %d node(s) x %d concurrent processes, %d ADDs%s per node"
          % (report["scenario"], a.nodes, a.procs, a.count,
             "" if a.no_del else " then %d DELs" % a.count), file=sys.stderr)
    report["host_etcd"] = run_plugin(a, "host-etcd", a.plugin, a.endpoint, a.etcd_pid, tck)
    if a.agent:
        report["host_etcd_agent"] = run_plugin(a, "host-etcd-agent", a.plugin, a.endpoint,
                                               a.etcd_pid, tck)
    if a.host_local:
        report["host_local"] = run_plugin(a, "host-local", a.host_local, None, None, tck)
    if not a.no_raw:
        report["raw_cas"] = run_raw(a, a.endpoint, a.etcd_pid, tck)
    report["loadavg_after"] = loadavg()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(text_table(report))
    bad = 0
    for kind in ("host_etcd", "host_etcd_agent"):
        if kind in report:
            he = report[kind]
            bad += sum(he[ph]["failed"] for ph in ("add", "del") if ph in he)
            bad += he["duplicate_addresses"]
    return 0 if bad == 0 else 3


# ---------------------------------------------------------------- output

def fmt(v, spec="%.2f", none="-"):
    return none if v is None else spec % v


def text_table(r):
    p = r["params"]
    lines = ["", "%s  [%s, git %s]  %d node(s) x %d procs, %d ADD + %d DEL per node; load %s -> %s"
             % (r["scenario"], r["label"], r["git"]["rev"], p["nodes"], p["procs_per_node"],
                p["count_per_node"], p["count_per_node"],
                " ".join("%.1f" % x for x in r["loadavg_before"]),
                " ".join("%.1f" % x for x in r["loadavg_after"]))]
    head = "%-20s %9s %6s %8s %8s %8s %12s %11s %11s %11s" % (
        "", "ok/s", "failed", "p50 ms", "p99 ms", "max ms", "etcd call/op",
        "(Txn+Rng)", "etcd CPU ms", "plugin CPU")
    lines.append(head)
    for kind in ("host_etcd", "host_etcd_agent", "host_local"):
        if kind not in r:
            continue
        for ph in ("add", "del"):
            if ph not in r[kind]:
                continue
            s = r[kind][ph]
            e = s.get("etcd")
            lines.append("%-20s %9s %6d %8s %8s %8s %12s %11s %11s %11s" % (
                "%s %s" % (kind.replace("_", "-"), ph.upper()), fmt(s["ok_per_sec"], "%.1f"),
                s["failed"], fmt(s["latency_ms"]["p50"]), fmt(s["latency_ms"]["p99"]),
                fmt(s["latency_ms"]["max"]), fmt(e and e["txns_per_op"]),
                "%s+%s" % (fmt(e and e["txn_per_op"]), fmt(e and e["range_per_op"])) if e else "-",
                fmt(e and e["cpu_ms_per_op"], "%.3f"), fmt(s["plugin_cpu_ms_per_op"])))
    raw = r.get("raw_cas")
    if raw and "error" not in raw:
        lines.append("%-20s %9s %6d %8s %8s %8s %12s %11s %11s %11s" % (
            "raw CAS (txns)", fmt(raw["txns_per_sec"], "%.0f"), raw["errors"],
            fmt(raw["latency_ms"]["p50"]), fmt(raw["latency_ms"]["p99"]),
            fmt(raw["latency_ms"]["max"]), "1.00", "1+0", fmt(raw["etcd_cpu_ms_per_txn"], "%.3f"),
            "-"))
        ip = raw["in_process_allocator"]
        lines.append("  (raw CAS: ipamctl bench, %d clients, %d txns; its in-process allocator "
                     "did %.0f alloc/s, %.2f round trips/alloc)"
                     % (raw["clients"], raw["txns"], ip["allocations_per_sec"],
                        ip["round_trips_per_allocation"]))
    elif raw:
        lines.append("raw CAS: FAILED: " + raw["error"])
    for kind in ("host_etcd", "host_etcd_agent"):
        if kind not in r:
            continue
        he = r[kind]
        name = kind.replace("_", "-")
        lines.append("  duplicate addresses among %s ADD results: %d"
                     % (name, he["duplicate_addresses"]))
        for ph in ("add", "del"):
            for e in he.get(ph, {}).get("first_errors", []):
                lines.append("  %s %s failure: %s" % (name, ph.upper(), json.dumps(e)))
    return "\n".join(lines)


def load_sorted(files):
    """Reports ordered by scenario size, then date (a re-run comes after)."""
    reps = []
    for p in files:
        with open(p) as f:
            reps.append(json.load(f))
    return sorted(reps, key=lambda r: (r["params"]["nodes"] * r["params"]["procs_per_node"],
                                       r["params"]["nodes"], r["date"]))


def table_main(a):
    reps = load_sorted(a.files)
    print("| scenario | op | processes | failed | ops/s | p50 ms | p99 ms | etcd calls/op "
          "(Txn + Range) | etcd CPU ms/op | plugin CPU ms/op | host-local ops/s | host-local "
          "p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in reps:
        p = r["params"]
        name = "%d node%s × %d proc%s" % (p["nodes"], "s" if p["nodes"] > 1 else "",
                                         p["procs_per_node"], "s" if p["procs_per_node"] > 1 else "")
        if r["label"] != "current":
            name += " [%s]" % r["label"]
        for ph in ("add", "del"):
            if ph not in r["host_etcd"]:
                continue
            s = r["host_etcd"][ph]
            e = s["etcd"]
            hl = r.get("host_local", {}).get(ph)
            print("| %s | %s | %d | %d | %s | %s | %s | %s (%s + %s) | %s | %s | %s | %s |" % (
                name, ph.upper(), s["processes"], s["failed"], fmt(s["ok_per_sec"], "%.0f"),
                fmt(s["latency_ms"]["p50"], "%.1f"), fmt(s["latency_ms"]["p99"], "%.1f"),
                fmt(e["txns_per_op"]), fmt(e["txn_per_op"]), fmt(e["range_per_op"]),
                fmt(e["cpu_ms_per_op"]), fmt(s["plugin_cpu_ms_per_op"], "%.1f"),
                fmt(hl and hl["ok_per_sec"], "%.0f"),
                "%s / %s" % (fmt(hl["latency_ms"]["p50"], "%.1f"),
                             fmt(hl["latency_ms"]["p99"], "%.1f")) if hl else "-"))
    print()
    print("| scenario | raw CAS clients | raw CAS txns/s | raw p50 / p99 ms | raw etcd CPU ms/txn |")
    print("|---|---:|---:|---:|---:|")
    for r in reps:
        raw = r.get("raw_cas")
        if raw and "error" not in raw:
            print("| %s | %d | %.0f | %.2f / %.2f | %s |" % (
                r["scenario"] + ("" if r["label"] == "current" else " [%s]" % r["label"]),
                raw["clients"], raw["txns_per_sec"], raw["latency_ms"]["p50"],
                raw["latency_ms"]["p99"], fmt(raw["etcd_cpu_ms_per_txn"], "%.3f")))
    return 0


def rollout_main(a):
    """One Markdown row per report and mode: the rollout figures (ADD phase
    only: etcd calls per ADD, failed ADDs, duplicates, p50 / p99)."""
    print("| label | IPv4 range | nodes × procs | ADDs | mode | etcd calls / ADD (Txn + Range) "
          "| failed | duplicates | p50 ms | p99 ms |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in load_sorted(a.files):
        p = r["params"]
        for kind, mode in (("host_etcd", "direct"), ("host_etcd_agent", "agent")):
            if kind not in r:
                continue
            s, he = r[kind]["add"], r[kind]
            e = s["etcd"]
            print("| %s | %s | %d × %d | %d | %s | %s (%s + %s) | %d | %d | %s | %s |" % (
                r["label"], p["ranges"][0], p["nodes"], p["procs_per_node"], s["processes"],
                mode, fmt(e["txns_per_op"]), fmt(e["txn_per_op"]), fmt(e["range_per_op"]),
                s["failed"], he["duplicate_addresses"], fmt(s["latency_ms"]["p50"], "%.0f"),
                fmt(s["latency_ms"]["p99"], "%.0f")))
    return 0


def plot_main(a):
    """Three panels, one group of bars per report: processes/s; etcd txns
    per op (Txn and Range stacked); etcd CPU ms per op (with raw CAS)."""
    reps = load_sorted(a.files)
    top, bottom, gap = 50, 95, 50
    pw = max(290, 105 * len(reps))  # room for 4 bars of ~20 px per group
    W, H = int(60 + 3 * pw + 2 * gap + 20), 445
    ph = H - top - bottom
    colors = {"etcd ADD": "#1f77b4", "etcd DEL": "#aec7e8", "local ADD": "#ff7f0e",
              "local DEL": "#ffbb78", "Txn": "#2ca02c", "Range": "#98df8a", "raw": "#d62728"}
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="60" y="22" font-size="15">cluster-style plugin benchmark '
           '(process per call; host-etcd on one etcd vs host-local)</text>']

    def nice_max(v):
        if v <= 0:
            return 1
        e = 10 ** math.floor(math.log10(v))
        for m in (1, 2, 2.5, 5, 10):
            if v <= m * e:
                return m * e
        return 10 * e

    def panel(i, title, groups, ymax_val):
        x0 = 60 + i * (pw + gap)
        ymax = nice_max(ymax_val * 1.08)
        svg.append('<text x="%.1f" y="%d" font-size="12" font-weight="bold">%s</text>'
                   % (x0, top - 10, title))
        for k in range(6):
            v = ymax * k / 5
            y = top + ph - ph * k / 5
            svg.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>'
                       % (x0, y, x0 + pw, y))
            svg.append('<text x="%.1f" y="%.1f" text-anchor="end">%g</text>' % (x0 - 4, y + 4, v))
        gw = pw / max(1, len(groups))
        for g, (label, bars) in enumerate(groups):
            bw = gw * 0.8 / max(1, len(bars))
            for b, (caption, stack) in enumerate(bars):
                x = x0 + g * gw + gw * 0.1 + b * bw
                if caption:
                    svg.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>'
                               % (x + bw / 2, top + ph + 11, caption))
                y = top + ph
                total = 0
                for name, v in stack:
                    if v is None:
                        continue
                    h = ph * v / ymax
                    y -= h
                    total += v
                    svg.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">'
                               '<title>%s %s: %.3g</title></rect>'
                               % (x, y, bw - 1, h, colors[name], label, name, v))
                svg.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.3g</text>'
                           % (x + bw / 2, y - 3, total))
            for j, part in enumerate(label.split("\n")):
                svg.append('<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>'
                           % (x0 + g * gw + gw / 2, top + ph + 25 + 13 * j, part))
        svg.append('<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#444"/>'
                   % (x0, top, pw, ph))

    def label(r):
        p = r["params"]
        return "%d×%d\n%s" % (p["nodes"], p["procs_per_node"], r["label"])

    g1, g2, g3 = [], [], []
    m1 = m2 = m3 = 0
    for r in reps:
        he, hl = r["host_etcd"], r.get("host_local")
        bars = [("A", [("etcd ADD", he["add"]["ok_per_sec"])]),
                ("D", [("etcd DEL", he["del"]["ok_per_sec"])])]
        if hl:
            bars += [("A", [("local ADD", hl["add"]["ok_per_sec"])]),
                     ("D", [("local DEL", hl["del"]["ok_per_sec"])])]
        g1.append((label(r), bars))
        m1 = max([m1] + [v for _, b in bars for _, v in b if v])
        bars = [(ph.upper(), [("Txn", he[ph]["etcd"]["txn_per_op"]),
                              ("Range", he[ph]["etcd"]["range_per_op"])]) for ph in ("add", "del")]
        g2.append((label(r), bars))
        m2 = max([m2] + [sum(v or 0 for _, v in b) for _, b in bars])
        bars = [("ADD", [("etcd ADD", he["add"]["etcd"]["cpu_ms_per_op"])]),
                ("DEL", [("etcd DEL", he["del"]["etcd"]["cpu_ms_per_op"])])]
        raw = r.get("raw_cas")
        if raw and "error" not in raw:
            bars.append(("raw", [("raw", raw["etcd_cpu_ms_per_txn"])]))
        g3.append((label(r), bars))
        m3 = max([m3] + [v for _, b in bars for _, v in b if v])
    panel(0, "plugin processes per second", g1, m1)
    panel(1, "etcd calls per op (Txn + Range)", g2, m2)
    panel(2, "etcd CPU ms per op", g3, m3)
    legend = [("etcd ADD", "host-etcd ADD"), ("etcd DEL", "host-etcd DEL"),
              ("local ADD", "host-local ADD"), ("local DEL", "host-local DEL"),
              ("Txn", "Txn calls"), ("Range", "Range calls"), ("raw", "raw CAS txn")]
    x = 60
    for key, text in legend:
        svg.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (x, H - 28, colors[key]))
        svg.append('<text x="%d" y="%d">%s</text>' % (x + 16, H - 18, text))
        x += 30 + 7 * len(text)
    svg.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(svg) + "\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="sub", required=True)
    n = sub.add_parser("node")
    n.add_argument("--hostname", required=True)
    n.add_argument("--plugin", required=True)
    n.add_argument("--config", required=True)
    n.add_argument("--count", type=int, required=True)
    n.add_argument("--procs", type=int, required=True)
    n.add_argument("--id-prefix", required=True)
    n.add_argument("--cni-path", required=True)
    n.add_argument("--agent-socket", default="")
    s = sub.add_parser("scenario")
    s.add_argument("--nodes", type=int, required=True)
    s.add_argument("--procs", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--endpoint", required=True)
    s.add_argument("--etcd-pid", type=int, required=True)
    s.add_argument("--etcd-bin", default="etcd")
    s.add_argument("--etcd-fs", default="?")
    s.add_argument("--plugin", required=True)
    s.add_argument("--ipamctl", required=True)
    s.add_argument("--host-local", default="")
    s.add_argument("--cni-path", default="/usr/lib/cni")
    s.add_argument("--node-data-dir", action="store_true")
    s.add_argument("--agent", action="store_true")
    s.add_argument("--no-raw", action="store_true")
    s.add_argument("--no-del", action="store_true")
    s.add_argument("--v4-range", default=V4_RANGE)
    s.add_argument("--v6-range", default=V6_RANGE)
    s.add_argument("--raw-count", type=int, default=0)
    s.add_argument("--raw-secs", type=float, default=5.0)
    s.add_argument("--label", default="current")
    s.add_argument("--repo", default=".")
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    t = sub.add_parser("rollout")
    t.add_argument("files", nargs="+")
    p = sub.add_parser("plot")
    p.add_argument("out")
    p.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.sub == "scenario" and min(a.nodes, a.procs, a.count) < 1:
        ap.error("--nodes, --procs and --count must be at least 1")
    try:
        return {"node": node_main, "scenario": scenario_main, "table": table_main, "rollout": rollout_main,
                "plot": plot_main}[a.sub](a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
