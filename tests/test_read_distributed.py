"""Scans on Ray and the checkpoint of sharded scans: the same answer as the local scan for every reducer, a killed
actor, an interrupted driver, a SIGKILLed local scan, path lists and .tar shards, and the microscope's feature
visualisations as Ray tasks. One local Ray runtime with 2 CPUs for the module."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.errors import UserError
from convlens.read import DeadUnits, Histogram, PixelCodes, PooledFeatures, TopK, distributed, load_dataset, scan
from convlens.read.checkpoint import ScanCheckpoint, scan_key
from convlens.show.microscope import ChannelHistogram

LAYERS = ["conv2", "shared", "conv4"]
TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _reducers():
    return [PooledFeatures(["conv4", "fc"]), TopK("conv2", k=5), TopK("conv4", k=3, channels=[1, 5, 7]),
            DeadUnits(LAYERS), Histogram("conv4", bins=20), PixelCodes(8), ChannelHistogram("shared", bins=12)]


def _assert_same(a, b):
    """Every reducer's result equal: ids, positions, counts exactly; float values and features to tolerance."""
    assert set(a) == set(b)
    for key in ("topk:conv2", "topk:conv4"):
        ra, rb = a[key], b[key]
        np.testing.assert_array_equal(ra.ids, rb.ids)
        np.testing.assert_array_equal(ra.y, rb.y)
        np.testing.assert_array_equal(ra.x, rb.x)
        np.testing.assert_allclose(ra.values, rb.values, rtol=1e-5, atol=1e-6)
        assert {int(i): Path(f) for i, f in ra.files.items()} == {int(i): Path(f) for i, f in rb.files.items()}
    fa, fb = a["features"], b["features"]
    np.testing.assert_array_equal(fa.ids, fb.ids)
    assert [Path(f) for f in fa.files] == [Path(f) for f in fb.files]
    for layer in ("conv4", "fc"):
        np.testing.assert_allclose(np.asarray(fa[layer]), np.asarray(fb[layer]), rtol=1e-5, atol=1e-6)
    for layer in LAYERS:
        da, db = a["dead"][layer], b["dead"][layer]
        assert da.images == db.images
        np.testing.assert_array_equal(da.silent, db.silent)
    ha, hb = a["hist:conv4"], b["hist:conv4"]
    np.testing.assert_array_equal(ha.counts, hb.counts)
    assert (ha.below, ha.above, ha.min, ha.max) == (hb.below, hb.above, hb.min, hb.max)
    assert ha.mean == pytest.approx(hb.mean, rel=1e-6) and ha.std == pytest.approx(hb.std, rel=1e-6)
    np.testing.assert_array_equal(a["pixels"][0], b["pixels"][0])
    np.testing.assert_allclose(a["pixels"][1], b["pixels"][1], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(a["chist:shared"].counts, b["chist:shared"].counts)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(22):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(40 + i, 36, 3), dtype=np.uint8)).save(sub / f"img{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def model():
    sys.path.insert(0, str(TESTS))
    from conftest import TinyCNN

    torch.manual_seed(0)
    return convlens.Model.wrap(TinyCNN().eval(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=32,
                               labels=[f"class{i}" for i in range(5)], name="tiny")


@pytest.fixture(scope="module")
def ray_runtime(model):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'convlens[ray]'")
    import conftest

    ray.cloudpickle.register_pickle_by_value(conftest)  # the test network's class travels by value to the workers
    started = not ray.is_initialized()
    if started:
        distributed.connect(distributed.Cluster(), num_cpus=2)  # as --cluster starts one, on 2 CPUs
    yield ray
    distributed.shutdown_pools()
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local(model, folder):
    return scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False)


def test_ray_scan_equals_local_scan_for_every_reducer(model, folder, local, ray_runtime):
    out = scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False,
               cluster=distributed.Cluster(workers=2), shard_size=4)
    assert out.engine.startswith("ray:") and out.shards == 6 and out.images == 22
    _assert_same(local, out)
    assert out["dead"]["conv2"].images == 22  # nothing counted twice
    # the actors of a runtime convlens started run at the driver's priority, not Ray's default niceness 15
    pool = next(reversed(distributed._POOLS.values()))
    assert {i["nice"] for i in ray_runtime.get([a.info.remote() for a in pool.actors])} == {os.nice(0)}
    assert out["hist:conv4"].counts.sum() + out["hist:conv4"].below + out["hist:conv4"].above == 22 * 8 * 16 * 16


def test_sharded_local_scan_equals_unsharded(model, folder, local, tmp_path):
    out = scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False, checkpoint=tmp_path / "ck",
               shard_size=5)
    assert out.shards == 5 and out.resumed == 0
    _assert_same(local, out)
    assert not (tmp_path / "ck").exists()  # a finished scan leaves no parts behind


def test_killed_actor_is_retried_and_the_result_is_unchanged(model, folder, local, ray_runtime, monkeypatch):
    killed = []

    def kill_one(merged, total, actors):
        if merged == 1 and not killed:
            ray_runtime.kill(actors[0], no_restart=False)  # dies with its queued shards; Ray restarts and retries
            killed.append(actors[0])

    monkeypatch.setattr(distributed, "_after_shard", kill_one)
    out = scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False,
               cluster=distributed.Cluster(workers=2), shard_size=3)
    assert killed and out.images == 22 and out.shards == 8
    _assert_same(local, out)


def test_interrupted_driver_resumes_from_its_checkpoint(model, folder, local, ray_runtime, monkeypatch, tmp_path):
    ck = tmp_path / "ck"

    def interrupt(merged, total, actors):
        if merged == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "_after_shard", interrupt)
    with pytest.raises(KeyboardInterrupt):
        scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False, checkpoint=ck,
             cluster=distributed.Cluster(workers=2), shard_size=4)
    parts = list(ck.rglob("part-*.pkl"))
    assert len(parts) == 3
    monkeypatch.setattr(distributed, "_after_shard", None)
    out = scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False, checkpoint=ck,
               cluster=distributed.Cluster(workers=2), shard_size=4)
    assert out.resumed == sum(len(p) for p in [range(4)] * 3) and out.images == 22
    _assert_same(local, out)
    assert out["dead"]["conv2"].images == 22


def test_checkpoint_key_and_damaged_part(model, folder, tmp_path):
    ds = load_dataset(folder)
    named = {r.name: r for r in _reducers()}
    k1 = scan_key(model, ds, named, 4)
    assert k1 == scan_key(model, ds, {r.name: r for r in _reducers()}, 4)
    assert k1 != scan_key(model, ds, named, 5)
    assert k1 != scan_key(model, ds, {**named, "topk:conv2": TopK("conv2", k=6)}, 4)
    assert k1 != scan_key(model, ds[:10], named, 4)
    ck = ScanCheckpoint(tmp_path, k1)
    ck.save(2, {"reducers": {}, "skipped": [], "images": 0})
    (ck.path / "part-0000003.pkl").write_bytes(b"truncated")
    assert ck.done() == [2, 3] and ck.load(2) is not None and ck.load(3) is None


def test_sigkilled_local_scan_loses_at_most_its_last_shard(model, folder, local, tmp_path):
    """A local scan killed with SIGKILL mid-way: the re-run reads only the shards that have no part."""
    ck = tmp_path / "ck"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import importlib, sys, time, torch
        sys.path.insert(0, {str(TESTS)!r})
        import convlens
        from conftest import TinyCNN
        from test_read_distributed import _reducers
        scan_mod = importlib.import_module("convlens.read.scan")
        feed = scan_mod._feed
        def slow(*a, **k):
            time.sleep(0.15)
            return feed(*a, **k)
        scan_mod._feed = slow
        torch.manual_seed(0)
        m = convlens.Model.wrap(TinyCNN().eval(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=32,
                                labels=[f"class{{i}}" for i in range(5)], name="tiny")
        scan_mod.scan(m, {str(folder)!r}, _reducers(), batch_size=3, progress=False, tune=False,
                      checkpoint={str(ck)!r}, shard_size=4)
    """))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(ck.rglob("part-*.pkl"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the scan ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    parts = len(list(ck.rglob("part-*.pkl")))
    assert 2 <= parts < 6
    out = scan(model, folder, _reducers(), batch_size=3, progress=False, tune=False, checkpoint=ck, shard_size=4)
    assert out.resumed == 4 * parts and out.images == 22
    _assert_same(local, out)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_path_list_and_tar_shards_read_like_the_folder(model, folder, local, tmp_path, ray_runtime):
    files = load_dataset(folder).files
    listing = tmp_path / "list.txt"
    listing.write_text("# the photos\n" + "".join(f"{f}\t{i % 3}\n" for i, f in enumerate(files)))
    ds = load_dataset(listing)
    assert ds.files == files and ds.labels == [i % 3 for i in range(len(files))]
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(0, len(files), 8):  # 3 shards: key.png + key.cls, WebDataset style
        _tar(shards / f"train-{s // 8:04d}.tar",
             [m for i in range(s, min(s + 8, len(files)))
              for m in ((f"sample{i:04d}.png", files[i].read_bytes()), (f"sample{i:04d}.cls", str(i % 3).encode()))])
    tds = load_dataset(shards)
    assert len(tds) == len(files) and tds.labels == [i % 3 for i in range(len(files))]
    assert tds.files[0] == shards / "train-0000.tar" / "sample0000.png"
    assert convlens.load_image(tds.files[5]).size == Image.open(files[5]).size  # decoded straight from the shard
    for out in (scan(model, listing, _reducers(), batch_size=3, progress=False, tune=False),
                scan(model, tds, _reducers(), batch_size=3, progress=False, tune=False,
                     cluster=distributed.Cluster(workers=2), shard_size=4)):
        np.testing.assert_array_equal(out["topk:conv2"].ids, local["topk:conv2"].ids)
        np.testing.assert_allclose(out["features"]["fc"], local["features"]["fc"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["dead"]["shared"].silent, local["dead"]["shared"].silent)
    listing.write_text(f"{shards / 'train-0001.tar'}\n{files[0]}\n")
    mixed = load_dataset(listing)
    assert len(mixed) == 9 and mixed.files[-1] == files[0]
    with pytest.raises(UserError, match="no images"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        load_dataset(tmp_path / "empty.txt")


def test_microscope_feature_vis_as_ray_tasks_equals_local_and_resumes(model, folder, ray_runtime, tmp_path):
    from convlens.show.microscope import build_microscope

    kw = {"layers": ["conv4"], "k": 2, "vis_steps": 3, "vis_size": 24, "seed": 3, "progress": False}
    build_microscope(model, folder, tmp_path / "local", **kw)
    remote = tmp_path / "ray"
    build_microscope(model, folder, remote, cluster=distributed.Cluster(workers=2), **kw)
    img = remote / "layers" / "conv4" / "img"
    for c in range(8):
        a = np.asarray(Image.open(tmp_path / "local" / "layers" / "conv4" / "img" / f"c{c}_vis.png"))
        b = np.asarray(Image.open(img / f"c{c}_vis.png"))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    before = (img / "c5_vis.png").read_bytes()
    (img / "c5_vis.png").unlink()  # an interrupted run: one picture missing
    build_microscope(model, folder, remote, cluster=distributed.Cluster(workers=2), **kw)
    assert (img / "c5_vis.png").read_bytes() == before  # the block is run again whole: the same picture


def test_cli_cluster_flag(sample_dir, tmp_path, ray_runtime):
    from click.testing import CliRunner

    from convlens.cli import main

    runner = CliRunner()
    outs = []
    for extra in ([], ["--cluster", "--workers", "1"]):
        out = tmp_path / ("ray" if extra else "local")
        res = runner.invoke(main, ["dead-units", str(sample_dir), "--limit", "12", "--layer", "blocks.1",
                                   "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        outs.append(json.loads((out / "result.json").read_text()))
    assert outs[1]["engine"].startswith("ray:")
    assert outs[0]["layers"] == outs[1]["layers"] and outs[1]["images"] == 12


def test_without_ray_the_local_path_never_imports_it_and_cluster_says_what_to_install(tmp_path, folder):
    code = textwrap.dedent(f"""
        import sys
        import convlens
        from convlens.read import scan, DeadUnits
        from convlens.read.distributed import INSTALL_HINT
        m = convlens.Model.wrap(__import__("torch").nn.Sequential(__import__("torch").nn.Conv2d(3, 4, 3),
                                __import__("torch").nn.ReLU()), size=16)
        scan(m, {str(folder)!r}, [DeadUnits(["1"])], progress=False, checkpoint={str(tmp_path / 'ck')!r})
        assert "ray" not in sys.modules, "the local path imported Ray"
        sys.modules["ray"] = None  # as if it were not installed
        try:
            scan(m, {str(folder)!r}, [DeadUnits(["1"])], progress=False, cluster="local")
        except ValueError as exc:
            assert str(exc) == INSTALL_HINT, exc
        else:
            raise AssertionError("no error without Ray")
        from convlens.cli import run
        sys.argv = ["convlens", "dead-units", {str(folder)!r}, "--cluster"]
        try:
            run()
        except SystemExit as exc:
            print("exit", exc.code)
    """)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "exit 2"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'convlens[ray]'" in lines[0], res.stderr
