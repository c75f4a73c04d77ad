#!/usr/bin/env python3
"""Side-by-side: ringkv and redis-server in one run, same pinning.

The server runs on CPU 1, the load (`ringkv bench` or redis-benchmark) on
CPU 0. Work is counted per CPU-second of the server process: utime+stime
from /proc/PID/stat over the measured run, and operations as the server
itself counted them (STATS / INFO total_commands_processed).

Usage: python3 benches/compare.py [--seconds 10] [--only NAME] [--rounds N] > table.md

`--only together` runs redis-benchmark against Redis and ringkv at the same
time, both servers on CPU 1 and both loads on CPU 0: the host's noise (which
moves figures taken minutes apart by +-20% on this shared machine) then
hits both alike, and the ratio of their ops per CPU-second is steady to a
few percent (an A/A run of one ringkv build against itself: 1.002-1.008).
Needs target/release/ringkv (cargo build --release -p ringkv) and
redis-server, redis-cli, redis-benchmark on PATH.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

BIN = os.environ.get("RINGKV_BIN", "target/release/ringkv")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Server:
    def __init__(self, kind, args, workdir):
        self.kind = kind
        if kind == "ringkv":
            self.dir = tempfile.mkdtemp(prefix="ringkv-cmp-", dir=workdir)
            cmd = ["taskset", "-c", "1", BIN, "serve", "--data-dir", self.dir, "--port", "0", "--resp-port", "0",
                   "--no-pin", "--log-level", "warn"] + args
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline()
            f = dict(w.split("=", 1) for w in line.split()[1:])
            self.native = int(f["native"].rsplit(":", 1)[1])
            self.resp = int(f["resp"].rsplit(":", 1)[1])
        else:
            self.dir = tempfile.mkdtemp(prefix="redis-cmp-", dir=workdir)
            self.resp = free_port()
            cmd = ["taskset", "-c", "1", "redis-server", "--port", str(self.resp), "--bind", "127.0.0.1",
                   "--save", "", "--dir", self.dir, "--logfile", os.path.join(self.dir, "log")] + args
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            out = subprocess.run(["redis-cli", "-p", str(self.resp), "PING"], capture_output=True, text=True).stdout
            if out.strip() == "PONG":
                break
            if time.time() > deadline:
                raise SystemExit(f"{kind} never answered PING")
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def ringkv_bench(port, protocol, extra, seconds):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as t:
        path = t.name
    cmd = ["taskset", "-c", "0", BIN, "bench", "-s", "127.0.0.1", "-p", str(port), "--protocol", protocol,
           "--threads", "1", "--test-time", str(seconds), "--json-out", path, "--log-level", "warn"] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(path) as f:
        doc = json.load(f)
    os.unlink(path)
    return doc


def ringkv_bench_together(targets, extra, seconds):
    """Runs one `ringkv bench` against each (server, port, protocol) at once,
    all pinned to CPU 0, and returns a `measure`-like result for each."""
    paths, procs, before = [], [], []
    for server, port, protocol in targets:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as t:
            paths.append(t.name)
        before.append(cpu_seconds(server.proc.pid))
    for (server, port, protocol), path in zip(targets, paths):
        cmd = ["taskset", "-c", "0", BIN, "bench", "-s", "127.0.0.1", "-p", str(port), "--protocol", protocol,
               "--threads", "1", "--test-time", str(seconds), "--json-out", path, "--log-level", "warn"] + extra
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("ringkv bench failed")
    results = []
    for (server, _, _), path, b in zip(targets, paths, before):
        cpu = cpu_seconds(server.proc.pid) - b
        with open(path) as f:
            doc = json.load(f)
        os.unlink(path)
        ops = doc["server"]["commands"] if doc.get("server") else doc["total_operations"]
        results.append({"per_cpu": ops / cpu if cpu else 0, "p99": doc["operations"]["total"]["latency_ms"]["p99"]})
    return results


def prefill(port, protocol, keys):
    subprocess.run(["taskset", "-c", "0", BIN, "bench", "-s", "127.0.0.1", "-p", str(port), "--protocol", protocol,
                    "--key-maximum", str(keys - 1), "--prefill", "--requests", "1", "--clients", "1",
                    "--log-level", "warn"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(server, run):
    before = cpu_seconds(server.proc.pid)
    doc = run()
    cpu = cpu_seconds(server.proc.pid) - before
    ops = doc["server"]["commands"] if doc.get("server") else doc["total_operations"]
    t = doc["operations"]["total"]["latency_ms"]
    return {"ops": doc["total_operations"], "server_ops": ops, "cpu": cpu, "per_cpu": ops / cpu if cpu else 0,
            "ops_s": doc["ops_per_sec"], "p50": t["p50"], "p99": t["p99"], "p999": t["p99_9"],
            "client_us": doc["client"]["cpu_us_per_op"], "errors": doc["total_errors"]}


def redis_benchmark(server, port, args):
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(["taskset", "-c", "0", "redis-benchmark", "-p", str(port), "-q"] + args,
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server.proc.pid) - before
    rps = [float(m) for m in re.findall(r"([0-9.]+) requests per second", out)]
    return {"cpu": cpu, "rps": rps, "raw": out.strip().replace("\n", " | ")}


def together(servers, args):
    """Runs one redis-benchmark against each server at once, all pinned to
    CPU 0; returns each server's CPU-seconds over the run."""
    before = [cpu_seconds(s.proc.pid) for s in servers]
    loads = [subprocess.Popen(["taskset", "-c", "0", "redis-benchmark", "-p", str(s.resp), "-q"] + args,
                              stdout=subprocess.DEVNULL) for s in servers]
    for p in loads:
        if p.wait() != 0:
            raise SystemExit("redis-benchmark failed")
    return [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before)]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def overload(server, bound, value_len, factor):
    """Writes `factor` times `bound` bytes of fresh keys with redis-benchmark,
    sampling the server's RSS every 20 ms; returns the RSS figures and the
    server's CPU use."""
    import threading
    idle = rss_bytes(server.proc.pid)
    peak = [idle]
    done = threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(server.proc.pid))
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()
    n = factor * bound // value_len
    r = redis_benchmark(server, server.resp, ["-t", "set", "-P", "16", "-c", "50", "-d", str(value_len),
                                              "-r", "1000000000", "-n", str(n)])
    done.set()
    t.join()
    r.update({"idle": idle, "peak": peak[0], "n": n})
    return r


def row(name, server, r):
    return (f"| {name} | {server} | {r['ops_s']:,.0f} | {r['server_ops']:,} | {r['cpu']:.2f} | "
            f"**{r['per_cpu']:,.0f}** | {r['p50']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} | {r['client_us']:.2f} | {r['errors']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--only", default="")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of each side-by-side workload (the servers take turns); medians are summarized")
    a = ap.parse_args()
    work = os.environ.get("BENCH_DIR", "/work/tmp-bench")
    os.makedirs(work, exist_ok=True)
    base = ["--ratio", "1:10", "--data-size", "32", "--key-maximum", str(a.keys - 1), "--clients", "50"]
    rows = []
    if a.only != "together":
        print("| workload | server | ops/s | ops counted by server | server CPU-s | ops per server CPU-s | p50 ms | p99 ms | p99.9 ms | bench CPU µs/op | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    summaries = []

    def three_servers(name, extra):
        """Runs one workload against Redis, ringkv's RESP port and its native
        port, `--rounds` times in turn, and keeps the medians for a summary."""
        kinds = ["redis", "ringkv-resp", "ringkv-native"]
        results = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for kind in kinds:
                s = Server("redis" if kind == "redis" else "ringkv", (["--shards", "1"] if kind != "redis" else []), work)
                try:
                    port, proto = (s.resp, "resp") if kind != "ringkv-native" else (s.native, "native")
                    prefill(port, proto, a.keys)
                    r = measure(s, lambda: ringkv_bench(port, proto, extra, a.seconds))
                    results[kind].append(r)
                    print(row(name, kind, r), flush=True)
                finally:
                    s.stop()
        if a.rounds > 1:
            med = lambda kind, key: statistics.median(r[key] for r in results[kind])
            for kind in kinds:
                summaries.append(f"| {name} | {kind} | {a.rounds} | {med(kind, 'per_cpu'):,.0f} | "
                                 f"{med(kind, 'per_cpu') / med('redis', 'per_cpu'):.2f}x | {med(kind, 'p99'):.3f} | "
                                 f"{sum(r['p99'] <= rr['p99'] for r, rr in zip(results[kind], results['redis']))} of {a.rounds} |")

    workloads = [
        ("no pipelining, 50 conns, 1:10", base + ["--pipeline", "1"]),
        ("pipeline 16, 50 conns, 1:10", base + ["--pipeline", "16"]),
        # Tail latency at the same offered load (open loop, below saturation).
        ("open loop 60k ops/s, 50 conns, 1:10", base + ["--pipeline", "1", "--rate", "60000"]),
    ]
    for name, extra in workloads:
        if not a.only or a.only in name:
            three_servers(name, extra)
    if summaries:
        print()
        print("| workload | server | rounds | median ops per server CPU-s | against Redis | median p99 ms | rounds with p99 ≤ Redis' |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(summaries), flush=True)
    # Two shards: shard-aware clients against clients that do not route.
    if not a.only or "shards" in a.only:
        for aware in [True, False]:
            s = Server("ringkv", ["--shards", "2"], work)
            try:
                prefill(s.native, "native", a.keys)
                extra = base + ["--pipeline", "1"] + ([] if aware else ["--no-shard-aware"])
                r = measure(s, lambda: ringkv_bench(s.native, "native", extra, a.seconds))
                print(row("2 shards, " + ("shard-aware" if aware else "not routing"), "ringkv-native", r), flush=True)
            finally:
                s.stop()
    # Durable writes.
    if not a.only or "durable" in a.only:
        dur = ["--ratio", "1:0", "--data-size", "32", "--key-maximum", str(a.keys - 1), "--clients", "50", "--pipeline", "1"]
        for kind, flags, proto in [("redis", ["--appendonly", "yes", "--appendfsync", "always"], "resp"),
                                   ("ringkv-native", ["--shards", "1", "--fsync", "always"], "native"),
                                   ("ringkv-resp", ["--shards", "1", "--fsync", "always"], "resp")]:
            s = Server("redis" if kind == "redis" else "ringkv", flags, work)
            try:
                port = s.native if proto == "native" else s.resp
                r = measure(s, lambda: ringkv_bench(port, proto, dur, a.seconds))
                print(row("durable SET (fsync always), 50 conns", kind, r), flush=True)
            finally:
                s.stop()
    # Cache mode: the memory bound under ten times the writes, and the
    # throughput that costs against store mode below its bound.
    if not a.only or "cache" in a.only:
        bound, value_len = 64 << 20, 1000
        print()
        print("| 10x overload, SET -d 1000 -P 16 -c 50 | idle RSS MiB | peak RSS MiB | (peak - idle) / bound | "
              "server CPU-s | SETs per server CPU-s |")
        print("|---|---|---|---|---|---|")
        for kind, flags in [("redis allkeys-lru", ["--maxmemory", str(bound), "--maxmemory-policy", "allkeys-lru"]),
                            ("ringkv cache", ["--shards", "1", "--mode", "cache", "--max-memory", str(bound),
                                              "--fsync", "never"]),
                            ("ringkv store, bound 4 GiB (not reached)", ["--shards", "1", "--max-memory", "4gb",
                                                                         "--fsync", "never"])]:
            s = Server("redis" if kind.startswith("redis") else "ringkv", flags, work)
            try:
                r = overload(s, bound, value_len, 10)
                print(f"| {kind} | {r['idle'] / 2**20:.1f} | {r['peak'] / 2**20:.1f} | "
                      f"{(r['peak'] - r['idle']) / bound:.3f} | {r['cpu']:.2f} | **{r['n'] / r['cpu']:,.0f}** |",
                      flush=True)
            finally:
                s.stop()
    # Everything at once (see the module doc): ringkv bench against Redis,
    # ringkv's RESP port and its native port (two ringkv processes), then
    # redis-benchmark against Redis and ringkv.
    if a.only == "together":
        print("| ringkv bench, three servers at once | round | Redis ops per CPU-s | ringkv RESP | ringkv native | RESP / Redis | native / Redis |")
        print("|---|---|---|---|---|---|---|")
        for name, extra in [("no pipelining, 50 conns, 1:10", base + ["--pipeline", "1"]),
                            ("pipeline 16, 50 conns, 1:10", base + ["--pipeline", "16"])]:
            ratios = {"resp": [], "native": []}
            for i in range(a.rounds):
                servers = [Server("redis", [], work), Server("ringkv", ["--shards", "1"], work),
                           Server("ringkv", ["--shards", "1"], work)]
                try:
                    targets = [(servers[0], servers[0].resp, "resp"), (servers[1], servers[1].resp, "resp"),
                               (servers[2], servers[2].native, "native")]
                    for s, port, proto in targets:
                        prefill(port, proto, a.keys)
                    r = ringkv_bench_together(targets, extra, a.seconds)
                    ratios["resp"].append(r[1]["per_cpu"] / r[0]["per_cpu"])
                    ratios["native"].append(r[2]["per_cpu"] / r[0]["per_cpu"])
                    print(f"| {name} | {i + 1} | {r[0]['per_cpu']:,.0f} | {r[1]['per_cpu']:,.0f} | "
                          f"{r[2]['per_cpu']:,.0f} | {ratios['resp'][-1]:.2f}x | {ratios['native'][-1]:.2f}x |",
                          flush=True)
                finally:
                    for s in servers:
                        s.stop()
            print(f"| {name} | median of {a.rounds} | | | | **{statistics.median(ratios['resp']):.2f}x** | "
                  f"**{statistics.median(ratios['native']):.2f}x** |", flush=True)
        print()
        print("| redis-benchmark, both servers at once | round | Redis ops per CPU-s | ringkv ops per CPU-s | ringkv / Redis |")
        print("|---|---|---|---|---|")
        loads = [("-t set,get -P 16 -c 50 -d 32 -r 1000000", "2000000", 2),
                 ("-t set,get -P 1 -c 50 -d 32 -r 1000000", "300000", 2),
                 ("-t set -P 16 -c 50 -d 1024 -r 200000", "1000000", 1)]
        for args, n, commands in loads:
            ratios = []
            for i in range(a.rounds):
                servers = [Server("redis", [], work), Server("ringkv", ["--shards", "1"], work)]
                try:
                    fill = args.replace("-t set,get", "-t set").split()
                    together(servers, fill + ["-n", "1000000"])
                    cpu = together(servers, args.split() + ["-n", n])
                    per = [commands * int(n) / c for c in cpu]
                    ratios.append(per[1] / per[0])
                    print(f"| {args} -n {n} | {i + 1} | {per[0]:,.0f} | {per[1]:,.0f} | {ratios[-1]:.2f}x |", flush=True)
                finally:
                    for s in servers:
                        s.stop()
            print(f"| {args} | median of {a.rounds} | | | **{statistics.median(ratios):.2f}x** |", flush=True)
        return
    # redis-benchmark cross-check on the RESP port.
    if not a.only or "redis-benchmark" in a.only:
        print()
        print("| redis-benchmark | server | server CPU-s | SET rps | GET rps | ops per server CPU-s |")
        print("|---|---|---|---|---|---|")
        per_cpu = {}
        for pipe in ["16", "1"]:
            n = "2000000" if pipe == "16" else "300000"
            for _ in range(a.rounds):
                for kind in ["redis", "ringkv"]:
                    s = Server(kind, ["--shards", "1"] if kind == "ringkv" else [], work)
                    try:
                        r = redis_benchmark(s, s.resp, ["-t", "set,get", "-P", pipe, "-c", "50", "-d", "32", "-r", "1000000", "-n", n])
                        ops = 2 * int(n)
                        per_cpu.setdefault((pipe, kind), []).append(ops / r['cpu'])
                        print(f"| -t set,get -P {pipe} -c 50 -d 32 -r 1000000 -n {n} | {kind} | {r['cpu']:.2f} | "
                              f"{r['rps'][0]:,.0f} | {r['rps'][1]:,.0f} | **{ops / r['cpu']:,.0f}** |", flush=True)
                    finally:
                        s.stop()
        if a.rounds > 1:
            print()
            print("| redis-benchmark -P | rounds | redis median | ringkv median | ratio of medians | ratio range |")
            print("|---|---|---|---|---|---|")
            for pipe in ["16", "1"]:
                redis, ringkv = per_cpu[(pipe, "redis")], per_cpu[(pipe, "ringkv")]
                ratios = [k / r for r, k in zip(redis, ringkv)]
                print(f"| {pipe} | {a.rounds} | {statistics.median(redis):,.0f} | {statistics.median(ringkv):,.0f} | "
                      f"**{statistics.median(ringkv) / statistics.median(redis):.2f}x** | "
                      f"{min(ratios):.2f}x–{max(ratios):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
