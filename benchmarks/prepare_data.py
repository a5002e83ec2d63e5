"""Time preparing ML-1M (load -> implicit threshold -> leave-one-out -> save) and its peak memory.

Each repeat runs in a fresh Python process, so peak RSS covers one preparation and nothing else;
the RSS after imports is reported beside it. Writes benchmarks/results/prepare_data.json and .md.

    python benchmarks/prepare_data.py [--data ../shared/data/movielens-1m] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "movielens-1m"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ragrec.data import PreprocessConfig, leave_one_out, load_raw, preprocess
t_import = time.perf_counter() - t0
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
src, out = sys.argv[1], sys.argv[2]
t = time.perf_counter(); data = load_raw("movielens-dat", src, name="ml-1m"); t_load = time.perf_counter() - t
t = time.perf_counter(); data = preprocess(data, PreprocessConfig(min_rating=4)); t_pre = time.perf_counter() - t
t = time.perf_counter(); data = leave_one_out(data); t_split = time.perf_counter() - t
t = time.perf_counter(); data.save(out); t_save = time.perf_counter() - t
s = data.stats()
print(json.dumps({
    "import_s": t_import, "load_s": t_load, "preprocess_s": t_pre, "split_s": t_split, "save_s": t_save,
    "total_s": t_load + t_pre + t_split + t_save,
    "rss_after_import_mb": rss_import / 1024, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "users": s.users, "items": s.items, "interactions": s.interactions, "split": s.split,
}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prepare_data")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"error: {args.data} not found (ML-1M folder with ratings*.dat[.gz], movies.dat)")

    runs = []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.data), str(Path(tmp) / "ml-1m")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"error: repeat {k} failed:\n{proc.stderr}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(
            f"repeat {k + 1}/{args.repeats}: {runs[-1]['total_s']:.2f} s, peak {runs[-1]['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    keys = ["load_s", "preprocess_s", "split_s", "save_s", "total_s", "import_s", "peak_rss_mb", "rss_after_import_mb"]
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    result = {
        "benchmark": "prepare ML-1M (recovered ratings; min_rating 4; leave-one-out; save Parquet)",
        "command": "python benchmarks/prepare_data.py",
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": __import__("os").cpu_count(),
        },  # fmt: skip
        "repeats": args.repeats,
        "median": median,
        "min_total_s": min(r["total_s"] for r in runs),
        "max_total_s": max(r["total_s"] for r in runs),
        "dataset": {k: runs[0][k] for k in ("users", "items", "interactions", "split")},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Preparing ML-1M",
        "",
        f"`{result['command']}`: {result['benchmark']}. Median of {args.repeats} fresh processes, "
        f"{result['machine']['cores']} cores.",
        "",
        "| phase | median s |",
        "|---|---|",
        *[f"| {k[:-2]} | {median[k]:.2f} |" for k in ("load_s", "preprocess_s", "split_s", "save_s", "total_s")],
        "",
        f"Total range over repeats: {result['min_total_s']:.2f}-{result['max_total_s']:.2f} s. "
        f"Import of ragrec.data: {median['import_s']:.2f} s.",
        "",
        f"Peak RSS (median): {median['peak_rss_mb']:.0f} MB, of which {median['rss_after_import_mb']:.0f} MB "
        "is the interpreter and imports.",
        "",
        f"Result: {result['dataset']['users']:,} users, {result['dataset']['items']:,} items, "
        f"{result['dataset']['interactions']:,} interactions; split {result['dataset']['split']}.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
