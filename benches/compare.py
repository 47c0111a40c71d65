#!/usr/bin/env python3
"""tally against DuckDB, Polars and PySpark on the same province files, in one run.

    python3 benches/compare.py                          # 1.8M and 10M transactions, every engine
    python3 benches/compare.py --sizes 1.8M,10M,50M     # and the 50M province (memory bound)
    python3 benches/compare.py --sizes 1M --engines tally,duckdb --repeat 1
    python3 benches/compare.py --profile --plot benches/compare.png   # + tally's operators, a plot

For each size, `tally generate` writes a province (same seed, so the same bytes every time) under
--data (reused when already there). Then each engine runs as its own process over the same
validated CSV files and writes the result rows as CSV:

  tally          tally run --dry-run: the province job, rows to a CSV file
  tally-parquet  the same job over the same rows as Parquet files
  tally-sinks    tally run into an empty Hudi table and SQLite warehouse (the full local run)
  duckdb         the same aggregation in DuckDB (benches/peers/duckdb_job.py)
  polars         the same aggregation in Polars (benches/peers/polars_job.py)
  pyspark        the reference implementation's Spark logic, local[2] (benches/peers/pyspark_reference.py)
  tally-rerun    on request: tally run again into a Hudi table and SQLite warehouse that already
                 hold the province (made once, untimed): every row is looked up, compared and
                 found unchanged, as when a province's cumulative files are run again the same day
  tally-cluster  on request: tally run --cluster over a Ballista scheduler and two executors of one
                 slot each on loopback (a tally built with --features distributed): what the
                 cluster costs against a local run on the same cores. Its rows must equal tally's
                 byte for byte. The scheduler and executors run beside the measured process, so
                 only its wall time compares.

Measured per run, for the whole process tree (interpreters and JVM start-up included): wall time,
CPU time (user + system, exact: this harness is the tree's subreaper and reaps every process) and
peak memory (the largest resident set any process reached, or the sampled sum over the tree if
larger). The median run of --repeat is shown. The runs go round by round, every engine once a
round, so a machine that slows down during the call slows every engine about alike; a second
table divides each run by tally's run of the same round (median and spread of those ratios), so
one slow tally run does not move every ratio. Results are checked: DuckDB's and Polars' rows
must equal tally's exactly (keys, amounts and chosen file), or the harness fails.

--profile prints, per size, tally's physical plan as it ran with each operator's metrics (rows,
compute time, memory, spills: `tally run --profile`, DataFusion's EXPLAIN ANALYZE), from one
extra run that is not timed. --plot FILE draws wall time against size for every engine (PNG,
log-log; matplotlib).

Needs: duckdb, polars, pyspark, psutil, matplotlib (benches/requirements.txt) and Java for PySpark.
"""
import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
ALL_ENGINES = ["tally", "tally-parquet", "tally-sinks", "duckdb", "polars", "pyspark"]
# Processes of this harness that outlive a measured run (LocalCluster's scheduler and executors).
SERVERS = set()
# Engines run only when named in --engines.
EXTRA_ENGINES = ["tally-cluster", "tally-rerun"]


def parse_count(text):
    text = text.strip().upper()
    scale = {"K": 1e3, "M": 1e6}.get(text[-1:], 1)
    return int(round(float(text.rstrip("KM")) * scale))


def label(count):
    if count >= 1e6:
        return f"{count / 1e6:g}M"
    if count >= 1e3:
        return f"{count / 1e3:g}K"
    return str(count)


# --- measuring a process tree -------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphaned descendants (Spark's JVM) are reparented to us, so we reap them and count their CPU."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def tree_rss(root):
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(cmd, stdout=None, env=None, cwd=None):
    """Runs cmd; returns dict(wall, cpu, peak_mb, rc, stderr).

    The harness must not compete with the engine for the machine's cores: the clock stops when a
    blocking wait4 returns (not at the next poll), and the process tree's memory is sampled on a
    thread every 0.1 s (psutil's walk over /proc costs about 1 ms of CPU; sampled every 10 ms it
    took a tenth of a core from every engine). A single process's peak is exact anyway (wait4's
    ru_maxrss); the samples add up trees of processes (Spark's Python driver and its JVM). The
    output file is opened, truncating the previous run's, before the clock starts."""
    before = os.times()
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
    root = psutil.Process(proc.pid)
    stderr_chunks = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()))
    reader.start()
    done = threading.Event()
    samples = [0]

    def sample():
        while not done.is_set():
            samples[0] = max(samples[0], tree_rss(root))
            done.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    rc = os.waitstatus_to_exitcode(status)
    max_single = usage.ru_maxrss * 1024
    peak_sampled = samples[0]
    proc.returncode = rc
    while True:  # orphans reparented to us (subreaper); not the cluster's servers, which stay up
        orphans = [c.pid for c in psutil.Process().children() if c.pid not in SERVERS]
        if not orphans:
            break
        for pid in orphans:
            try:
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                continue
            max_single = max(max_single, usage.ru_maxrss * 1024)
    reader.join()
    if stdout:
        out.close()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "wall": wall,
        "cpu": cpu,
        "peak_mb": max(peak_sampled, max_single) / 2**20,
        "rc": rc,
        "stderr": b"".join(stderr_chunks).decode(errors="replace"),
    }


# --- data -----------------------------------------------------------------------------------------


def ensure_data(tally, data_root, count, province, seed):
    folder = data_root / f"{province}-{label(count)}-seed{seed}"
    done = folder / "generated.json"
    if done.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    print(f"generating {label(count)} transactions under {folder} ...", file=sys.stderr, flush=True)
    subprocess.run(
        [str(tally), "generate", "--transactions", str(count), "--province", province,
         "--seed", str(seed), "--forms", "validated,parquet", "--out", str(folder)],
        check=True,
    )
    done.write_text(json.dumps({"transactions": count, "seed": seed}))
    return folder


def file_times(folder):
    """Each validated file's time in epoch microseconds (what tally calls source_time)."""
    times = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".csv":
            st = f.stat()
            times[str(f)] = st.st_mtime_ns // 1000
    return times


# --- engines --------------------------------------------------------------------------------------


class LocalCluster:
    """A Ballista scheduler and two one-slot executors of `tally cluster` on loopback."""

    def __init__(self, tally, work):
        import socket

        def free_port():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                return sock.getsockname()[1]

        self.port = free_port()
        self.procs = []
        logs = work / "cluster-logs"
        logs.mkdir(exist_ok=True)

        def start(name, args, port):
            log = open(logs / f"{name}.log", "wb")
            proc = subprocess.Popen([str(tally), "-q", "cluster", *args], stdout=log, stderr=log)
            self.procs.append(proc)
            SERVERS.add(proc.pid)
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return
                except OSError:
                    if time.time() > deadline:
                        self.stop()
                        raise SystemExit(f"tally cluster {name} did not start (see {logs})")
                    time.sleep(0.1)

        start("scheduler", ["scheduler", "--bind", f"127.0.0.1:{self.port}"], self.port)
        for i in range(2):
            port = free_port()
            start(f"executor-{i}", ["executor", "--scheduler", f"127.0.0.1:{self.port}",
                                    "--bind", f"127.0.0.1:{port}", "--slots", "1",
                                    "--work-dir", str(work / f"shuffle-{i}")], port)
        time.sleep(2)  # executors register with their first heartbeat

    def url(self):
        return f"df://127.0.0.1:{self.port}"

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
            SERVERS.discard(proc.pid)
        self.procs = []


def engine_command(engine, tally, data, province, work, times_json, cluster=None):
    out = work / f"{engine}.csv"
    validated, parquet = data / "validated", data / "parquet"
    state = f"sqlite://{work / 'state.db'}"
    jobs = ["--jobs-dir", str(ROOT / "jobs")]
    if engine == "tally":
        return [str(tally), "-q", *jobs, "run", "--job", "province_sales", "--province", province,
                "--input", str(validated), "--dry-run", "--format", "csv", "--state", state], out
    if engine == "tally-cluster":
        return [str(tally), "-q", *jobs, "run", "--job", "province_sales", "--province", province,
                "--input", str(validated), "--dry-run", "--format", "csv", "--state", state,
                "--cluster", cluster.url(), "--cluster-partitions", "4"], out
    if engine == "tally-parquet":
        return [str(tally), "-q", *jobs, "run", "--job", "province_sales", "--province", province,
                "--input", str(parquet), "--dry-run", "--format", "csv", "--state", state], out
    if engine == "tally-sinks":
        for old in ["hudi", "warehouse.db"]:
            path = work / old
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return [str(tally), "-q", *jobs, "run", "--job", "province_sales", "--province", province,
                "--input", str(validated), "--table", str(work / "hudi"),
                "--warehouse", f"sqlite://{work / 'warehouse.db'}", "--state", state], None
    if engine == "tally-rerun":
        return [str(tally), "-q", *jobs, "run", "--job", "province_sales", "--province", province,
                "--input", str(validated), "--table", str(work / "rerun-hudi"),
                "--warehouse", f"sqlite://{work / 'rerun-warehouse.db'}", "--state", state], None
    if engine == "duckdb":
        return [sys.executable, str(PEERS / "duckdb_job.py"), str(validated), province,
                str(times_json), str(out)], None
    if engine == "polars":
        return [sys.executable, str(PEERS / "polars_job.py"), str(validated), province,
                str(times_json), str(out)], None
    if engine == "pyspark":
        return [sys.executable, str(PEERS / "pyspark_reference.py"), str(validated), province,
                str(work / "pyspark-out")], None
    raise SystemExit(f"unknown engine {engine}")


def result_csv(engine, work):
    return work / f"{engine}.csv"


def clear_output(engine, work):
    """Removes an engine's output of its previous run before the clock starts, so no engine's time
    includes freeing the last run's file from the page cache (452 MB of CSV at 10M)."""
    result_csv(engine, work).unlink(missing_ok=True)
    if engine == "pyspark":
        shutil.rmtree(work / "pyspark-out", ignore_errors=True)


def check_same_rows(work, engines):
    """DuckDB compares every engine's rows with tally's: keys, amounts, chosen file. Raises on a difference."""
    import duckdb

    base = result_csv("tally", work)
    if not base.exists():
        return {}
    con = duckdb.connect()
    cols = ("store_id, item_id, trans_date::VARCHAR, sale_amount::DECIMAL(18,2), "
            "tax_amount::DECIMAL(18,2), discount_amount::DECIMAL(18,2), "
            "regexp_replace(source_file, '^.*/|[.][a-z]+$', '', 'g')")

    def rows(path):
        return f"(SELECT {cols} FROM read_csv('{path}', header = true, all_varchar = true))"

    counts = {}
    cluster_csv = result_csv("tally-cluster", work)
    if "tally-cluster" in engines and cluster_csv.exists():
        if cluster_csv.read_bytes() != base.read_bytes():
            raise SystemExit(f"tally-cluster's output differs from tally's ({cluster_csv} vs {base})")
        counts["tally-cluster"] = "same bytes as tally"
    for engine in engines:
        if engine == "tally-cluster":
            continue
        path = result_csv(engine, work)
        if engine in ("tally", "tally-sinks", "pyspark") or not path.exists():
            continue
        diff = con.execute(
            f"SELECT count(*) FROM (({rows(base)} EXCEPT ALL {rows(path)}) "
            f"UNION ALL ({rows(path)} EXCEPT ALL {rows(base)}))"
        ).fetchone()[0]
        if diff:
            raise SystemExit(f"{engine}'s rows differ from tally's in {diff} rows ({path} vs {base})")
        counts[engine] = "same rows as tally"
    n = con.execute(f"SELECT count(*) FROM read_csv('{base}', header = true)").fetchone()[0]
    return {"result_rows": n, **counts}


# --- main -----------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1.8M,10M", help="transactions per province, comma-separated")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES))
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine and size (median shown)")
    ap.add_argument("--spark-repeat", type=int, default=1, help="runs of PySpark (slow) per size")
    ap.add_argument("--data", default=str(ROOT / "target" / "bench-data"), help="where provinces are generated")
    ap.add_argument("--tally", help="the tally binary (default: cargo build --release, then target/release/tally)")
    ap.add_argument("--province", default="IL")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", help="also write every measurement to this file")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--profile", action="store_true",
                    help="print tally's per-operator profile for each size (one extra, untimed run)")
    ap.add_argument("--plot", help="draw wall time against size for every engine into this PNG file")
    args = ap.parse_args()

    if args.tally:
        tally = Path(args.tally).resolve()
    else:
        subprocess.run(["cargo", "build", "--release", "--bin", "tally"], cwd=ROOT, check=True)
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        tally = (target / "release" / "tally").resolve()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ALL_ENGINES + EXTRA_ENGINES:
            raise SystemExit(f"unknown engine `{e}` (known: {', '.join(ALL_ENGINES + EXTRA_ENGINES)})")
    sizes = [parse_count(s) for s in args.sizes.split(",")]
    become_subreaper()
    data_root = Path(args.data)
    data_root.mkdir(parents=True, exist_ok=True)

    results = []
    profiles = []
    for count in sizes:
        data = ensure_data(tally, data_root, count, args.province, args.seed)
        work = data / "runs"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        times_json = work / "file-times.json"
        times_json.write_text(json.dumps(file_times(data / "validated")))
        mb = sum(f.stat().st_size for f in (data / "validated").iterdir()) / 1e6
        # Round by round, each engine once a round (PySpark in the first --spark-repeat rounds):
        # a machine that slows down during the call slows every engine about alike, instead of
        # the engines measured last. tally-cluster's runs come after the rounds, its cluster up only
        # for them.
        if "tally-rerun" in engines:
            # The table and warehouse every timed run upserts into again, made once, untimed.
            cmd, _ = engine_command("tally-rerun", tally, data, args.province, work, times_json)
            shutil.rmtree(work / "rerun-hudi", ignore_errors=True)
            (work / "rerun-warehouse.db").unlink(missing_ok=True)
            made = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if made.returncode != 0:
                raise SystemExit(f"tally-rerun's first run failed at {label(count)}:\n{made.stderr[-3000:]}")
        wanted = {e: args.spark_repeat if e == "pyspark" else args.repeat for e in engines}
        runs = {e: [] for e in engines}
        rounded = [e for e in engines if e != "tally-cluster"]
        for _ in range(max(wanted.values(), default=0)):
            for engine in rounded:
                if len(runs[engine]) < wanted[engine]:
                    runs[engine].append(timed_run(engine, tally, data, args.province, work,
                                                  times_json, count, len(runs[engine]) + 1))
        if "tally-cluster" in engines:
            cluster = LocalCluster(tally, work)
            try:
                for i in range(wanted["tally-cluster"]):
                    runs["tally-cluster"].append(timed_run("tally-cluster", tally, data, args.province,
                                                           work, times_json, count, i + 1, cluster))
            finally:
                cluster.stop()
        for engine in engines:
            median = sorted(runs[engine], key=lambda r: r["wall"])[len(runs[engine]) // 2]
            results.append({"size": count, "label": label(count), "csv_mb": mb, "engine": engine,
                            "wall": median["wall"], "cpu": median["cpu"], "peak_mb": median["peak_mb"],
                            "runs": [r["wall"] for r in runs[engine]]})
        checked = check_same_rows(work, engines)
        for r in results:
            if r["size"] == count:
                r["check"] = checked
        if args.profile:
            profiles.append((count, tally_profile(tally, data, args.province, work)))

    tables = render(results, engines, sizes)
    print(tables)
    for count, profile in profiles:
        print(f"tally's operators at {label(count)} (tally run --profile):\n{profile}")
    if args.plot:
        plot(results, engines, sizes, Path(args.plot))
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(tables)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def timed_run(engine, tally, data, province, work, times_json, count, number, cluster=None):
    """One measured run of `engine`, its output of the run before removed first; a failed run
    stops the harness with the engine's error."""
    cmd, stdout = engine_command(engine, tally, data, province, work, times_json, cluster)
    clear_output(engine, work)
    m = measure(cmd, stdout=stdout, cwd=work)
    if m["rc"] != 0:
        raise SystemExit(f"{engine} failed at {label(count)} (exit {m['rc']}):\n{m['stderr'][-3000:]}")
    print(f"  {label(count):>5} {engine:<14} run {number}: {m['wall']:7.2f} s wall "
          f"{m['cpu']:7.2f} s cpu {m['peak_mb']:8.0f} MB", file=sys.stderr, flush=True)
    return m


def tally_profile(tally, data, province, work):
    """The physical plan of one (untimed) dry run, each operator with its metrics."""
    cmd, _ = engine_command("tally", tally, data, province, work, None)
    done = subprocess.run(cmd + ["--profile"], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tally --profile failed:\n{done.stderr[-3000:]}")
    marker = "the query's operators, with their metrics:"
    return done.stderr.split(marker, 1)[-1].strip() if marker in done.stderr else done.stderr


def plot(results, engines, sizes, path):
    """Wall time against size, one line per engine, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for engine in engines:
        points = sorted((r["size"], r["wall"]) for r in results if r["engine"] == engine)
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=engine)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xticks(sizes)
    ax.set_xticklabels([label(c) for c in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    seconds = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(seconds)
    ax.yaxis.set_minor_formatter(seconds)
    ax.set_xlabel("transactions in the province")
    ax.set_ylabel("wall time, s (median, whole process)")
    machine = f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    ax.set_title(f"The province job, one run of benches/compare.py ({machine})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def at_size(results, count):
    """The results of one size, and tally's among them (None without it)."""
    rows = [r for r in results if r["size"] == count]
    return rows, next((r for r in rows if r["engine"] == "tally"), None)


def render(results, engines, sizes):
    lines = []
    machine = f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    lines.append(f"Whole processes on this machine ({machine}); median of the runs; ratio = engine wall / tally wall.\n")
    lines.append("| transactions | validated CSV | result rows | engine | wall s | CPU s | peak MB | × tally wall |")
    lines.append("|---:|---:|---:|---|---:|---:|---:|---:|")
    for count in sizes:
        rows, base = at_size(results, count)
        for r in rows:
            ratio = f"{r['wall'] / base['wall']:.2f}" if base else "-"
            n = r.get("check", {}).get("result_rows", "-")
            lines.append(f"| {r['label']} | {r['csv_mb']:.0f} MB | {n} | {r['engine']} | {r['wall']:.2f} | "
                         f"{r['cpu']:.2f} | {r['peak_mb']:.0f} | {ratio} |")
    lines.append("")
    # A slowdown shorter than a round lands on some engines' runs only, and one slow tally run
    # moves every ratio above: each engine's run is also divided by tally's run of the same round
    # (tally-cluster runs after the rounds, so it has no pairs).
    lines.append("Paired by round (each run's wall / tally's wall in the same round; median, min–max):\n")
    lines.append("| transactions | engine | rounds | × tally wall, paired |")
    lines.append("|---:|---|---:|---:|")
    for count in sizes:
        rows, base = at_size(results, count)
        for r in rows:
            if not base or r["engine"] in ("tally", "tally-cluster"):
                continue
            ratios = sorted(w / b for w, b in zip(r["runs"], base["runs"]))
            if ratios:
                median = ratios[len(ratios) // 2]
                lines.append(f"| {r['label']} | {r['engine']} | {len(ratios)} | "
                             f"{median:.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f}) |")
    lines.append("")
    lines.append("Scaling (wall seconds per million transactions; flat means linear):\n")
    lines.append("| engine | " + " | ".join(label(c) for c in sizes) + " |")
    lines.append("|---|" + "---:|" * len(sizes))
    for engine in engines:
        cells = []
        for count in sizes:
            r = next((r for r in results if r["size"] == count and r["engine"] == engine), None)
            cells.append(f"{r['wall']:.2f} s ({r['wall'] / (count / 1e6):.3f}/M)" if r else "-")
        lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
