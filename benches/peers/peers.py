"""Tideline's window_file against DuckDB on the same Parquet file of bids.

Run by `benches/peers.sh`, which makes the virtualenv (pinned DuckDB,
pyarrow, numpy) and builds `window_file`; see that script for the options.

The input is our own seeded generator: `ROWS` bids `(auction, price, ts)`,
`auction` over 10,000 keys skewed towards small ids (key = floor(10,000 u^2),
u uniform), `price` uniform in [1, 10,000], and `ts` ten rows per
millisecond (500 s of event time for 5 M rows) minus a disorder drawn
uniformly from [0, 1,999] ms. With a watermark of max - 2 s no row is late.
The same rows go to one file and, alternating, to two files (the parallel
reading scenario).

Queries, all computing what window_file writes (key, window_start,
window_end, count, sum, min, max):
  A: tumbling 10 s per auction;
  B: sliding 10 s every 2 s per auction (DuckDB expands every row into its
     five windows; window_file keeps 2 s panes).
Every result is checked equal to DuckDB's (row count and an order-free
checksum over all columns) before a figure is printed.
"""

import argparse
import os
import subprocess
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KEYS = 10_000
SEED = 19
ROW_GROUP = 122_880


def generate(directory, rows):
    """Writes bids.parquet and split/bids-{0,1}.parquet, once per size."""
    one = os.path.join(directory, "bids.parquet")
    split = os.path.join(directory, "split")
    if os.path.exists(one) and os.path.exists(os.path.join(split, "bids-1.parquet")):
        return one, split
    os.makedirs(split, exist_ok=True)
    rng = np.random.default_rng(SEED)
    u = rng.random(rows)
    auction = np.floor(KEYS * u * u).astype(np.int64)
    price = rng.integers(1, 10_001, rows, dtype=np.int64)
    start = 1_700_000_000_000
    ts = start + np.arange(rows, dtype=np.int64) // 10 - rng.integers(0, 2_000, rows, dtype=np.int64)
    table = pa.table({"auction": auction, "price": price, "ts": ts})
    pq.write_table(table, one + ".tmp", row_group_size=ROW_GROUP)
    os.replace(one + ".tmp", one)
    for part in (0, 1):
        path = os.path.join(split, f"bids-{part}.parquet")
        pq.write_table(table.take(np.arange(part, rows, 2)), path + ".tmp", row_group_size=ROW_GROUP)
        os.replace(path + ".tmp", path)
    return one, split


QUERIES = {
    # window_start for ts: floor to the window size.
    "A": """
        SELECT auction AS key, (ts // 10000) * 10000 AS window_start,
               (ts // 10000) * 10000 + 10000 AS window_end,
               count(*) AS count, sum(price) AS sum, min(price) AS min, max(price) AS max
        FROM read_parquet('{input}') GROUP BY ALL
    """,
    # The five 10 s windows every 2 s that hold ts.
    "B": """
        SELECT auction AS key, (ts // 2000 - k) * 2000 AS window_start,
               (ts // 2000 - k) * 2000 + 10000 AS window_end,
               count(*) AS count, sum(price) AS sum, min(price) AS min, max(price) AS max
        FROM read_parquet('{input}'), range(5) t(k) GROUP BY ALL
    """,
}

WINDOWS = {"A": "tumbling:10s", "B": "sliding:10s,2s"}

CHECKSUM = """
    SELECT count(*), sum(hash(key::BIGINT, window_start::BIGINT, window_end::BIGINT,
                              count::BIGINT, sum::BIGINT, min::BIGINT, max::BIGINT))
    FROM {relation}
"""


def duckdb_run(query, source, threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET enable_progress_bar = false")
    sql = QUERIES[query].format(input=source)
    began = time.perf_counter()
    con.execute(f"CREATE TEMP TABLE result AS {sql}")
    seconds = time.perf_counter() - began
    checksum = con.execute(CHECKSUM.format(relation="result")).fetchone()
    return seconds, checksum


def tideline_run(binary, query, source, parallelism, state, work, split):
    out = os.path.join(work, f"out-{query}.csv")
    late = os.path.join(work, f"late-{query}.csv")
    args = [
        binary, "--input", source,
        "--key-column", "auction", "--value-column", "price", "--time-column", "ts",
        "--window", WINDOWS[query], "--out-of-orderness", "2s",
        "--parallelism", str(parallelism), "--state", state,
        "--output", out, "--late-output", late,
    ]
    if split:
        args.append("--partition-per-file")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    began = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"window_file failed ({' '.join(args)}):\n{done.stderr}")
    summary = dict(
        field.split("=", 1) for field in done.stdout.strip().splitlines()[-1].split() if "=" in field
    )
    if summary.get("late") != "0" or summary.get("dead_letter") != "0":
        sys.exit(f"window_file reported late or dead-lettered rows: {summary}")
    con = duckdb.connect()
    checksum = con.execute(
        CHECKSUM.format(relation=f"read_csv('{out}', header = true)")
    ).fetchone()
    return float(summary["seconds"]), wall, checksum


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-file", required=True, help="the release window_file binary")
    parser.add_argument("--dir", required=True, help="where the input and outputs go")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--queries", default="A,B")
    parser.add_argument("--no-rocksdb", action="store_true")
    opts = parser.parse_args()
    data = os.path.join(opts.dir, f"rows-{opts.rows}")
    os.makedirs(data, exist_ok=True)
    one, split = generate(data, opts.rows)
    split_glob = os.path.join(split, "*.parquet")

    columns = [("DuckDB 1 thread", None), ("DuckDB 2 threads", None),
               ("p=1", ("memory", 1, False)), ("p=2", ("memory", 2, False)),
               ("2 files p=2", ("memory", 2, True))]
    if not opts.no_rocksdb:
        columns.append(("p=1 RocksDB", ("rocksdb", 1, False)))
    rows = []
    for query in opts.queries.split(","):
        line = {}
        expected = None
        for label, spec in columns:
            if spec is None:
                threads = 1 if "1 thread" in label else 2
                seconds, checksum = duckdb_run(query, one, threads)
                wall = seconds
            else:
                state, parallelism, is_split = spec
                seconds, wall, checksum = tideline_run(
                    opts.window_file, query, split if is_split else one,
                    parallelism, state, data, is_split)
            if expected is None:
                expected = checksum
            elif checksum != expected:
                sys.exit(f"query {query}, {label}: result {checksum} differs from DuckDB's {expected}")
            line[label] = (opts.rows / seconds, wall / seconds)
            print(f"{query} {label}: {opts.rows / seconds / 1e6:.2f} M rows/s "
                  f"(job {seconds:.3f} s, process {wall:.3f} s), result rows {checksum[0]}",
                  flush=True)
        rows.append((query, line))

    base = "DuckDB 1 thread"
    print()
    print("| query | " + " | ".join(label for label, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for query, line in rows:
        cells = []
        for label, spec in columns:
            rate, overhead = line[label]
            cell = f"{rate / 1e6:.2f} M"
            if label != base:
                cell += f" ({rate / line[base][0]:.2f}x)"
            if spec is not None:
                cell += f", process {overhead:.2f}x job"
            cells.append(cell)
        print(f"| {query} | " + " | ".join(cells) + " |")
    if "p=1" in rows[0][1] and "2 files p=2" in rows[0][1]:
        for query, line in rows:
            print(f"{query}: 2 files p=2 / 1 file p=1 = {line['2 files p=2'][0] / line['p=1'][0]:.2f}x; "
                  f"p=2 / p=1 = {line['p=2'][0] / line['p=1'][0]:.2f}x; "
                  f"RocksDB / memory = {line.get('p=1 RocksDB', (float('nan'),))[0] / line['p=1'][0]:.2f}x")


if __name__ == "__main__":
    main()
