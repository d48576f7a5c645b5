"""Run every benchmark with its defaults, each in its own process, and print a markdown summary of ratio vs target.

Each benchmark runs as ``python benchmarks/bench_<name>.py --threads N --out <tmp>/<name>.json [--smoke]`` (a fresh
process: no thread pool, allocator or compiled-graph state leaks from one into the next), its own report streams to
the console, and its JSON is read back for the summary. The exit status is 0 when every headline figure passes,
1 otherwise (a benchmark that crashed counts as failed).

    python benchmarks/run_all.py                       # everything, ~15-35 min on 2 cores
    python benchmarks/run_all.py --smoke               # seconds each: checks that they run, numbers mean nothing
    python benchmarks/run_all.py --only inference detect --out results.json --markdown results.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # first: puts the repository root on sys.path

BENCHMARKS = ("inference", "detect", "train_step", "train_loop", "data", "metrics")  # the order of the speed issues
HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="a subset to run")
    parser.add_argument("--threads", type=int, default=common.DEFAULT_THREADS)
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to every benchmark")
    parser.add_argument("--out", type=Path, help="write all results (every benchmark's JSON) to this file")
    parser.add_argument("--markdown", type=Path, help="also write the summary table to this file")
    return parser.parse_args(argv)


def run_one(name: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """Run one benchmark in a subprocess; its JSON document, or ``{"error": ...}`` when it failed."""
    out = out_dir / f"{name}.json"
    command = [sys.executable, str(HERE / f"bench_{name}.py"), "--threads", str(args.threads), "--out", str(out)]
    if args.smoke:
        command.append("--smoke")
    print(f"\n######## {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=common.REPO_ROOT)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0 or not out.is_file():
        return {"benchmark": name, "error": f"exited with status {completed.returncode}", "wall_s": elapsed}
    document = json.loads(out.read_text(encoding="utf-8"))
    document["wall_s"] = elapsed
    return document


def summary_rows(documents: list) -> list:
    """One row per figure: (benchmark, figure, ratio, target, verdict, ours ms, peer ms, headline)."""
    rows = []
    for document in documents:
        if "error" in document:
            rows.append((document["benchmark"], "(benchmark crashed)", "n/a", "", f"error: {document['error']}",
                         "", "", True))
            continue
        for fig in document["figures"]:
            target = "" if fig["target"] is None else f"{fig['direction']} {fig['target']:g}"
            if fig["note"].startswith("failed"):
                verdict = "error"
            elif fig["pass"] is None:
                verdict = "info"
            else:
                verdict = "PASS" if fig["pass"] else "FAIL"
            if not fig["headline"]:
                verdict += " (extra)"
            rows.append((document["benchmark"], fig["name"], common.format_ratio(fig["ratio"]), target, verdict,
                         common.format_ms(fig["ours_ms"]), common.format_ms(fig["peer_ms"]), fig["headline"]))
    return rows


def markdown_table(rows: list, smoke: bool, threads: int) -> str:
    lines = [f"Benchmarks{' (SMOKE: sizes and rounds too small to mean anything)' if smoke else ''}, "
             f"{threads} threads; ratios measured within one run, interleaved, median of paired rounds.", "",
             "| benchmark | figure | ratio | target | result | ours ms | peer ms |",
             "|---|---|---:|---|---|---:|---:|"]
    for benchmark, figure, ratio, target, verdict, ours_ms, peer_ms, _headline in rows:
        lines.append(f"| {benchmark} | {figure} | {ratio} | {target} | {verdict} | {ours_ms} | {peer_ms} |")
    headline = [row for row in rows if row[7]]
    passed = sum(row[4] == "PASS" for row in headline)
    lines += ["", f"{passed} of {len(headline)} headline figures pass."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    common.warn_if_busy(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        documents = [run_one(name, args, Path(tmp)) for name in args.only]
    rows = summary_rows(documents)
    table = markdown_table(rows, args.smoke, args.threads)
    print("\n" + table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"smoke": args.smoke, "threads": args.threads, "benchmarks": documents},
                                       indent=1), encoding="utf-8")
        print(f"all results written to {args.out}")
    all_pass = all(row[4] == "PASS" for row in rows if row[7])
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
