#!/usr/bin/env python3
"""The Hudi sink's requests to S3, one after another or at once, under a store's round-trip time.

    source tests/servers/garage.sh          # the S3 test server, on loopback
    python3 benches/s3_round_trips.py --tally target/release/tally --latency-ms 20
    python3 benches/s3_round_trips.py --tally OLD --vs NEW --runs 3    # two builds, in turn
    python3 benches/s3_round_trips.py --tally target/release/tally --again  # a second run, same table

Loopback answers in well under a millisecond, so a run against Garage alone hides what a request
costs on AWS S3 (tens of milliseconds). Here a small TCP proxy stands between tally and Garage
and holds each answer for --latency-ms before its first bytes go back: a request then costs about
one round trip more, as it would from an EMR node, while the bytes either way are not slowed. The province job runs into a new Hudi table (a fresh prefix of the test bucket) and an
empty SQLite warehouse, over the 1.8M province of benches/compare.py (--data).

Printed: each request as the proxy saw it (its time from the first, method and key, the table's
prefix left out), how many there were, the Hudi sink's seconds as tally reports them (none for a
run that commits nothing) and the whole run's; with
--again, those of a second run over the same files into the same table (every row unchanged: the
stored keys are read, nothing is written). With --vs, only the sink's seconds per build and run. Requests sent within a few milliseconds of each
other went at once; a request a round trip after the one before waited for it.

What this does not show: S3's own throughput, multipart uploads of large files, or the
variation of a real store's latency.
"""
import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def proxy(listen_port, target_port, delay, log):
    """Runs the delaying proxy in a thread; `log` collects (time, request line).

    An answer is held once, before its first bytes go back: the round trip. What follows (a base
    file being read) streams on at loopback speed, as S3 streams after its first byte."""

    async def pipe(reader, writer, asked, hold):
        try:
            while data := await reader.read(65536):
                if hold is None:
                    if data[:7].split(b" ")[0] in (b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"):
                        log.append((time.time(), data.split(b"\r\n", 1)[0].decode(errors="replace")))
                    asked[0] = True
                elif asked[0]:
                    asked[0] = False
                    await asyncio.sleep(hold)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        asked = [False]  # a request went out since the last answer began
        await asyncio.gather(pipe(client_reader, server_writer, asked, None),
                             pipe(server_reader, client_writer, asked, delay))

    async def serve(ready):
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        ready.set()
        async with server:
            await server.serve_forever()

    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(serve(ready)), daemon=True).start()
    ready.wait(5)


def run(tally, data, port, work, table=None):
    """One run of the province job into `table` (a new one by default) behind the proxy."""
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}", AWS_ALLOW_HTTP="true")
    bucket = os.environ.get("TALLY_TEST_S3_BUCKET", "tally-test")
    table = table or f"s3://{bucket}/round-trips-{time.time_ns()}/hudi"
    for name in ("warehouse.db", "state.db"):
        if os.path.exists(os.path.join(work, name)):
            os.remove(os.path.join(work, name))
    began = time.time()
    out = subprocess.run(
        [tally, "-q", "run", "--job", "province_sales", "--province", "IL", "--input", data,
         "--table", table, "--hudi-single-writer",
         "--warehouse", f"sqlite://{work}/warehouse.db", "--state", f"sqlite://{work}/state.db"],
        env=env, capture_output=True, text=True)
    wall = time.time() - began
    if out.returncode != 0:
        sys.exit(f"tally failed:\n{out.stderr}")
    hudi = re.search(r"hudi .*?, ([\d.]+)s$|hudi .*no changes.*$", out.stdout + out.stderr, re.M)
    secs = float(hudi.group(1)) if hudi and hudi.group(1) else float("nan")
    return table, secs, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tally", required=True, help="the tally binary")
    ap.add_argument("--vs", help="a second tally binary, run in turn with --tally")
    ap.add_argument("--latency-ms", type=float, default=20, help="held per piece of an answer (20)")
    ap.add_argument("--runs", type=int, default=1, help="runs per binary (1)")
    ap.add_argument("--again", action="store_true", help="print a second run's requests, same table")
    ap.add_argument("--data", default="/work/bench/compare/IL-1.8M-seed42/validated",
                    help="the validated province files (benches/compare.py's 1.8M)")
    ap.add_argument("--port", type=int, default=3999, help="the proxy's port (3999)")
    args = ap.parse_args()
    target = int(os.environ.get("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3900").rsplit(":", 1)[1])
    log = []
    proxy(args.port, target, args.latency_ms / 1000, log)
    with tempfile.TemporaryDirectory() as work:
        if args.vs:
            for i in range(args.runs):
                for name, binary in (("A", args.tally), ("B", args.vs)):
                    _, secs, wall = run(binary, args.data, args.port, work)
                    print(f"{name} run {i + 1}: hudi sink {secs:.2f} s, whole run {wall:.2f} s")
            return
        for _ in range(args.runs):
            log.clear()
            table, secs, wall = run(args.tally, args.data, args.port, work)
            if args.again:
                log.clear()
                table, secs, wall = run(args.tally, args.data, args.port, work, table)
            prefix = table.split("/", 3)[3].rsplit("/hudi", 1)[0]
            t0 = log[0][0] if log else 0
            for t, line in log:
                line = line.replace(prefix + "/hudi/", "").replace(prefix.replace("/", "%2F") + "%2Fhudi%2F", "")
                print(f"{t - t0:7.3f}  {line.replace(' HTTP/1.1', '')}")
            sink = "no commit" if secs != secs else f"hudi sink {secs:.2f} s"
            print(f"{len(log)} requests; {sink}, whole run {wall:.2f} s, at {args.latency_ms:g} ms per answer")


if __name__ == "__main__":
    main()
