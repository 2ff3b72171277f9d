"""Usage: python benchmarks/openvino_ctrl_c.py TRIES PATHS.txt WORKDIR

Ctrl-C during an OpenVINO-backed embed scan, N tries: count exit statuses and 'FATAL: exception not rethrown'."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
n_tries = int(sys.argv[1]); data = sys.argv[2]; work = Path(sys.argv[3]); work.mkdir(exist_ok=True)
rng = random.Random(0)
env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
rows = []
for t in range(n_tries):
    err = work / f"try{t}.err"
    at = rng.uniform(0.05, 0.9)
    with open(err, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "convlens", "embed", data, "--method", "pca", "--out",
                              str(work / f"o{t}"), "--cache-dir", str(work / f"c{t}")], stderr=fh,
                             stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    done = 0
    while p.poll() is None and time.monotonic() < deadline:
        found = re.findall(r"scan:.*?\|\s*(\d+)/(\d+)", err.read_text(errors="replace"))
        if found:
            done, total = int(found[-1][0]), int(found[-1][1])
            if done >= at * total:
                break
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))  # land anywhere inside a batch
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)
    text = err.read_text(errors="replace")
    row = {"try": t, "rc": rc, "done": done, "fatal": "exception not rethrown" in text,
           "openvino": "openvino" in text.lower() or None, "last": text.strip().splitlines()[-1][-160:] if text.strip() else ""}
    rows.append(row)
    print(json.dumps(row), flush=True)
print(json.dumps({"tries": len(rows), "rc": {str(r): sum(1 for x in rows if x["rc"] == r) for r in {x["rc"] for x in rows}},
                  "fatal": sum(r["fatal"] for r in rows)}))
