#!/usr/bin/env python3
"""CPU one plugin invocation spends on a large config, counted by the kernel
(getrusage of the child: user + system), best of a few runs.

For each binary given (e.g. target/release/host-etcd and an older build):
  * refused: N one-range sets whose last two overlap, so the whole
    validation runs and ends in code 7 before any store call;
  * ADD: N one-range sets on the embedded store (a temp dataDir), one
    address per set (validation, planning, one store transaction).

Usage: scripts/config_cpu.py BINARY [BINARY ...]
       SETS=10,100,1000 ADD_SETS=100,1000 scripts/config_cpu.py ...
Standard library only; no root, no etcd.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
       "CNI_NETNS": "/x", "CNI_PATH": "/x", "PATH": os.environ.get("PATH", "")}


def config(n, overlap):
    sets = [[{"subnet": f"10.{i // 256}.{i % 256}.0/24"}] for i in range(n)]
    if overlap:
        sets.append([dict(sets[-1][0])])
    return json.dumps({"cniVersion": "1.0.0", "name": "v", "ipam": {
        "type": "host-etcd", "dataDir": tempfile.mkdtemp(), "ranges": sets}}).encode()


def cpu_of(binary, stdin, reps=3):
    best, out = None, None
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([binary], input=stdin, env=ENV, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = cpu if best is None else min(best, cpu)
    return best * 1000, out


def sizes(var, default):
    return [int(x) for x in os.environ.get(var, default).split(",")]


def main():
    for binary in sys.argv[1:]:
        for n in sizes("SETS", "10,100,1000"):
            ms, out = cpu_of(binary, config(n, True))
            code = json.loads(out.stdout or b"{}").get("code")
            print(f"{binary}\trefused, {n}+1 sets (last two overlap)\tcode {code}\t{ms:.1f} ms CPU")
        for n in sizes("ADD_SETS", "100,1000"):
            ms, out = cpu_of(binary, config(n, False))
            ok = out.returncode == 0 and len(json.loads(out.stdout)["ips"]) == n
            print(f"{binary}\tADD, {n} sets, embedded store\t{'ok' if ok else 'FAILED'}\t{ms:.1f} ms CPU")


if __name__ == "__main__":
    main()
