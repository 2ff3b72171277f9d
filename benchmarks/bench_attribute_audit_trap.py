"""Claim: ``convlens audit --segment`` finds the background-reliant classes of a trap set.

The trap set: shared photos of related classes whose backgrounds differ (picked by looking at the photos):
dogs and a bison on snow beside a wolf, an ox and a fox on grass; snow vehicles beside field machines; boats
and water birds beside animals on sand or in a field. It is built as symlinks under
``DIR/<background>/<photo>``, then the audit runs on it through the command line, and its ``result.json`` is
summarised per background and per class.

Usage: python benchmarks/bench_attribute_audit_trap.py DIR OUT [METHOD] [extra convlens audit options]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import SAMPLE

TRAP = {
    "snow": ["Eskimo_dog", "Siberian_husky", "bison", "dogsled", "ski", "snowmobile", "snowplow"],
    "grass": ["white_wolf", "English_foxhound", "grey_fox", "ox", "lawn_mower", "tractor", "harvester", "hay"],
    "water": ["grey_whale", "killer_whale", "otter", "canoe", "lifeboat", "gondola", "schooner", "paddle", "drake",
              "flamingo", "trimaran"],
    "sand": ["sea_lion", "black_swan", "impala", "gazelle"],
}


def build(root: Path) -> dict[str, str]:
    """Symlink the trap photos into ``root/<background>/``; returns photo stem -> background."""
    where = {}
    for bg, names in TRAP.items():
        (root / bg).mkdir(parents=True, exist_ok=True)
        for n in names:
            (src,) = sorted(SAMPLE.glob(f"n*_{n}.JPEG"))
            dst = root / bg / src.name
            if not dst.exists():
                dst.symlink_to(src)
            where[f"{bg}/{src.stem}"] = where[src.stem] = bg  # the audit names a photo by path or by stem
    return where


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "gradcam"
    where = build(root)
    cmd = [sys.executable, "-m", "convlens", "audit", str(root), "--segment", "--method", method, "--out", str(out),
           *sys.argv[4:]]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    doc = json.loads((out / "result.json").read_text())["audit"]
    rows = doc["images"]
    print(f"\n{len(rows)} images, {method}, masks: {doc['source']}")
    print("\n| background | images | saliency on background (mean) | background share of pixels | concentration |")
    print("|---|---|---|---|---|")
    for bg in TRAP:
        g = [r for r in rows if where.get(Path(r["stem"]).with_suffix("").as_posix()) == bg]
        if g:
            mean = lambda k, g=g: sum(r[k] for r in g) / len(g)
            print(f"| {bg} | {len(g)} | {mean('background'):.3f} | {1 - mean('area'):.3f} | "
                  f"{mean('concentration'):.2f} |")
    print("\n| photo | background | predicted | p | saliency on background | object area | concentration |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["background"]):
        stem = Path(r["stem"]).with_suffix("").as_posix()
        print(f"| {stem.split('/')[-1].split('_', 1)[1]} | {where.get(stem, '?')} | {r['label']} | "
              f"{r['probability']:.2f} | {r['background']:.3f} | {r['area']:.3f} | {r['concentration']:.2f} |")


if __name__ == "__main__":
    main()
