"""Speed of this checkout against another pxzip install (release 3fb0a0f), measured in one run.

    python benchmarks/speed_compare.py --ref /path/to/ref-venv/bin/python --out benchmarks/results/speed.json
    python benchmarks/speed_compare.py --ref .venv/bin/python --ref-env PXZIP_GEMM=float64 --out ...

The second form compares this checkout with itself on its float64 GEMM path (pxzip/igemm.py): the
int8 limb GEMMs' own share of a speed-up.

Each case runs benchmarks/speed.py in a fresh process, alternately under the reference interpreter
and this one (so drift on a noisy machine hits both), and the sha256 of every file is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(python: str, case: str, threads: int, env: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run([python, str(HERE / "speed.py"), "--cases", case, "--threads", str(threads), "--out", str(out)],
                       check=True, cwd=tmp, env={**os.environ, **(env or {})})  # fmt: skip
        report = json.loads(out.read_text())
    return {**report["cases"][case], "peak_rss_mb": report["peak_rss_mb"], "pxzip": report["pxzip"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="python of the reference install")
    ap.add_argument(
        "--ref-env", action="append", default=[], metavar="KEY=VALUE", help="environment of the reference runs"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default="cifar1:1,cifar64:1,palette:1,kodim23-gray:1,kodim23:1,kodim23:2")
    a = ap.parse_args()
    # the runs start in a temporary folder; abspath, not resolve(): a venv's python is a link
    ref_python = os.path.abspath(a.ref)
    ref_env = dict(kv.split("=", 1) for kv in a.ref_env)
    rows = []
    for spec in a.cases.split(","):
        case, _, threads = spec.partition(":")
        ref, new = run(ref_python, case, int(threads), ref_env), run(sys.executable, case, int(threads))
        row = {
            "case": case,
            "threads": int(threads),
            "ref_env": ref_env,
            "ref": ref,
            "new": new,
            "same_bytes": ref["sha256"] == new["sha256"],
        }
        for key in ("encode_s", "decode_s", "encode_s_per_image", "decode_s_per_image"):
            if key in ref:
                row[key.replace("_s", "_speedup")] = ref[key] / new[key]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("ref", "new")}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
