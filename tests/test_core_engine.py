"""The forward-only reader: OpenVINO's compiled network gives PyTorch's numbers, falls back, caches, stays quiet."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.core import engine
from convlens.core.taps import activations
from convlens.errors import UserError
from convlens.read import DeadUnits, PooledFeatures, TopK, load_dataset, scan

pytestmark = pytest.mark.skipif(not engine.openvino_available(), reason="OpenVINO is not installed")

LAYERS = ["act1", "conv2", "shared", "fc"]  # an in-place ReLU, a conv, a ReLU module called twice, the logits


def _pixels(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_openvino_reader_equals_pytorch_on_awkward_layers(tiny):
    x = _pixels(5)  # odd: the last request is padded and cut off
    want = activations(tiny, x, LAYERS)
    with engine.open_reader(tiny, LAYERS, engine="openvino") as read:
        assert read.engine == "openvino"
        got = read(x)
        assert read(x[:1])["fc"].shape == (1, 5)
    for name in LAYERS:
        assert got[name].shape == want[name].shape
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_scan_gives_the_same_results_on_both_engines(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(11):
        Image.fromarray(rng.integers(0, 256, (36 + i, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    ds = load_dataset(tmp_path)
    out = {e: scan(tiny, ds, [PooledFeatures(["conv4", "fc"]), TopK("conv2", k=3), DeadUnits(["act1", "shared"])],
                   batch_size=4, progress=False, engine=e) for e in ("torch", "openvino")}
    assert out["openvino"].engine == "openvino" and out["torch"].engine == "torch"
    for layer in ("conv4", "fc"):
        np.testing.assert_allclose(out["openvino"]["features"].layers[layer], out["torch"]["features"].layers[layer],
                                   rtol=1e-5, atol=1e-5)
    a, b = out["openvino"]["topk:conv2"], out["torch"]["topk:conv2"]
    assert (a.ids == b.ids).all() and (a.y == b.y).all() and (a.x == b.x).all()
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    for layer in ("act1", "shared"):
        assert out["openvino"]["dead"][layer].silent.tolist() == out["torch"]["dead"][layer].silent.tolist()


def test_small_scans_stay_on_pytorch_under_auto(tiny, tmp_path):
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    assert scan(tiny, tmp_path, [PooledFeatures("fc")], progress=False).engine == "torch"


def test_converted_network_comes_back_from_the_disk_cache(tiny, monkeypatch):
    engine._readers.clear()
    with engine.open_reader(tiny, ["conv4"], engine="openvino") as read:
        first = read(_pixels(2))["conv4"]
    assert list((engine.cache_root() / "openvino").glob("*.xml"))
    engine._readers.clear()  # a new process: only the disk cache remains
    ov = engine._openvino()
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: pytest.fail("converted again despite the cache"))
    with engine.open_reader(tiny, ["conv4"], engine="openvino") as read:
        torch.testing.assert_close(read(_pixels(2))["conv4"], first)


def test_disk_cache_keeps_only_the_most_recently_used(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(engine, "_KEEP_ON_DISK", 2)
    for layers in (["conv2"], ["conv3"], ["conv4"]):
        engine._readers.clear()
        with engine.open_reader(tiny, layers, engine="auto") as read:  # auto: the measured choice is kept too
            read(_pixels(1))
    kept = list((tmp_path / "openvino").iterdir())
    assert len(kept) == 6 and {p.suffix for p in kept} == {".xml", ".bin", f".threads{torch.get_num_threads()}"}


def test_auto_measures_once_and_remembers_its_choice(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    engine._readers.clear()
    with engine.open_reader(tiny, ["conv4"], engine="auto") as read:
        first = read.engine
    (choice,) = (tmp_path / "openvino").glob("*.threads*")
    assert (choice.read_text() == "0") == (first == "torch")
    engine._readers.clear()  # a new process: the choice comes from disk, nothing is timed again
    fastest = engine._fastest
    monkeypatch.setattr(engine, "_fastest", lambda *a, **k: pytest.fail("timed again despite the cache"))
    with engine.open_reader(tiny, ["conv4"], engine="auto") as read:
        assert read.engine == first
    monkeypatch.setattr(engine, "_fastest", fastest)
    choice.write_text("0")  # as if PyTorch had won: auto reads with PyTorch, a forced openvino still compiles
    engine._readers.clear()
    with engine.open_reader(tiny, ["conv4"], engine="auto") as read:
        assert read.engine == "torch"
    with engine.open_reader(tiny, ["conv4"], engine="openvino") as read:
        assert read.engine == "openvino"


def test_a_layout_round_trip_is_not_a_change(tiny, tiny_module, monkeypatch):
    engine._readers.clear()
    with engine.open_reader(tiny, ["conv4"], engine="openvino"):
        pass
    tiny_module.to(memory_format=torch.channels_last).to(memory_format=torch.contiguous_format)  # new storage
    monkeypatch.setattr(engine, "_cache_path", lambda *a, **k: pytest.fail("compiled again for the same weights"))
    with engine.open_reader(tiny, ["conv4"], engine="openvino") as read:
        assert read.engine == "openvino"


def test_changed_weights_are_compiled_again(tiny, tiny_module):
    x = _pixels(2)
    with engine.open_reader(tiny, ["fc"], engine="openvino") as read:
        before = read(x)["fc"]
    with torch.no_grad():
        tiny_module.fc.bias.add_(1.0)  # in place, as an optimiser step does
    with engine.open_reader(tiny, ["fc"], engine="openvino") as read:
        after = read(x)["fc"]
    torch.testing.assert_close(after, before + 1.0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, activations(tiny, x, "fc")["fc"], rtol=1e-5, atol=1e-5)


def test_the_same_network_under_other_preprocessing_is_compiled_again(tiny, tiny_module):
    other = convlens.Model.wrap(tiny_module, mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5), size=32)
    x = _pixels(2)
    for model in (tiny, other):
        with engine.open_reader(model, ["conv2"], engine="openvino") as read:
            torch.testing.assert_close(read(x)["conv2"], activations(model, x, "conv2")["conv2"], rtol=1e-5,
                                       atol=1e-5)


def test_a_network_openvino_cannot_run_falls_back_to_pytorch_with_a_warning(tiny, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    engine._readers.clear()
    monkeypatch.setattr(engine, "_converted", broken)
    with contextlib.ExitStack() as stack:
        with pytest.warns(UserWarning, match="unsupported operation"):
            read = stack.enter_context(engine.open_reader(tiny, ["fc"], engine="auto"))
        assert read.engine == "torch"
        torch.testing.assert_close(read(_pixels(3))["fc"], activations(tiny, _pixels(3), "fc")["fc"])
    with pytest.raises(UserError, match="unsupported operation"), engine.open_reader(tiny, ["fc"], engine="openvino"):
        pass


def test_a_compiled_network_that_differs_is_not_used(tiny, monkeypatch):
    engine._readers.clear()
    call = engine._OpenVINOReader.__call__
    monkeypatch.setattr(engine._OpenVINOReader, "__call__",
                        lambda self, x: {k: v + 0.01 for k, v in call(self, x).items()})  # numbers that are off
    with contextlib.ExitStack() as stack:
        with pytest.warns(UserWarning, match="differs from PyTorch"):
            read = stack.enter_context(engine.open_reader(tiny, ["fc"], engine="auto"))
        assert read.engine == "torch"


def test_bad_engine_requests_are_user_errors(tiny, tmp_path):
    with pytest.raises(UserError, match="unknown engine"), engine.open_reader(tiny, ["fc"], engine="tensorrt"):
        pass
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "0.png")
    with pytest.raises(UserError, match="unknown engine"):
        scan(tiny, tmp_path, [PooledFeatures("fc")], engine="fast")


def test_openvino_is_imported_without_telemetry(tmp_path):
    code = ("from convlens.core.engine import _openvino; ov = _openvino(); "
            "import openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__)")
    env = dict(os.environ, HOME=str(tmp_path), CI="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("telemetry_stub")
    assert not (Path(tmp_path) / "intel").exists()  # no consent or client-id files written


@pytest.mark.slow
def test_lite0_features_and_deep_maps_match_pytorch_on_photos(lite0, chelsea):
    x = torch.stack([lite0.preprocess.to_tensor(chelsea), lite0.preprocess.to_tensor(chelsea.rotate(90))])
    layers = ["blocks.4", "global_pool"]
    want = activations(lite0, x, layers)
    with engine.open_reader(lite0, layers, engine="openvino") as read:
        got = read(x)
    for name in layers:
        scale = float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5 * scale + 1e-6)
    assert int(lite0.module.forward_head(got["global_pool"][:1, :, None, None]).argmax()) == \
        int(lite0(x[:1]).argmax())


def test_small_job_reads_eagerly_and_never_compiles(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    engine._readers.clear()
    monkeypatch.setattr(engine, "_compile", lambda *a, **k: pytest.fail("compiled for a 64-image job"))
    x = _pixels(16)
    with engine.open_reader(tiny, ["conv4"], engine="auto", images=64) as read:
        for _ in range(4):
            got = read(x)
            assert read.engine == "torch"
    torch.testing.assert_close(got["conv4"], activations(tiny, x, ["conv4"])["conv4"])
    assert not (tmp_path / "openvino").exists()
    plan = engine.load_plan(tiny, ["conv4"])  # the eager cost is remembered, nothing about OpenVINO
    assert plan["eager_spi"] > 0 and "compile_s" not in plan


def test_big_job_compiles_mid_job_and_remembers_the_cost(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    engine._readers.clear()
    monkeypatch.setattr(engine, "_fastest", lambda model, layers, readers, with_eager: readers[0])  # OpenVINO wins
    x = _pixels(8)
    want = activations(tiny, x, ["conv4"])["conv4"]
    with engine.open_reader(tiny, ["conv4"], engine="auto", images=10**9) as read:
        engines = []
        for _ in range(4):
            torch.testing.assert_close(read(x)["conv4"], want, rtol=1e-4, atol=1e-5)
            engines.append(read.engine)
    assert engines == ["torch", "openvino", "openvino", "openvino"]  # decided after the first timed eager batch
    plan = engine.load_plan(tiny, ["conv4"])
    assert plan["compile_s"] > 0 and plan["torch_faster"] is False and plan["openvino_spi"] > 0
    # the next process: a measured speedup and compile cost decide; a job they cannot repay stays eager
    auto = engine._AutoReader(tiny, ["conv4"], images=10)
    assert auto.plan == plan and not auto.repays(plan["eager_spi"])
    assert engine._AutoReader(tiny, ["conv4"], images=10**12).repays(plan["eager_spi"]) == \
        (plan["eager_spi"] > plan["openvino_spi"])


def test_a_network_already_converted_on_disk_is_cheap_to_compile(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    engine._readers.clear()
    spi = 0.02  # 1000 images at 20 ms each: the prior 2x saves 10 s -- less than a cold compile, more than a warm one
    cold = engine._AutoReader(tiny, ["conv4"], images=1000)
    assert cold._prior_compile_s() == engine._PRIOR_COMPILE_S and not cold.repays(spi)
    with engine.open_reader(tiny, ["conv4"], engine="openvino") as read:  # converts it into the disk cache
        read(_pixels(2))
    warm = engine._AutoReader(tiny, ["conv4"], images=1000)
    assert "compile_s" not in warm.plan and warm._prior_compile_s() == engine._PRIOR_WARM_COMPILE_S
    assert warm.repays(spi)
    engine._readers.clear()


def test_fair_threads_leave_busy_cores_to_others(monkeypatch):
    monkeypatch.setattr(engine, "_cores", lambda: 2)
    monkeypatch.setattr(engine, "_runnable_elsewhere", lambda samples=3: 0)
    assert engine.fair_threads(2) == 2
    monkeypatch.setattr(engine, "_runnable_elsewhere", lambda samples=3: 1)
    assert engine.fair_threads(2) == 1
    monkeypatch.setattr(engine, "_runnable_elsewhere", lambda samples=3: 9)
    assert engine.fair_threads(2) == 1  # never none
    assert engine._runnable_elsewhere() >= 0


def test_scan_on_a_busy_machine_uses_the_free_cores_and_gives_threads_back(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "_cores", lambda: 2)
    monkeypatch.setattr(engine, "_runnable_elsewhere", lambda samples=3: 1)
    files = []
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    before = torch.get_num_threads()
    out = scan(tiny, files, [PooledFeatures("conv4")], progress=False)
    assert out.threads == min(before, 1) and torch.get_num_threads() == before
    assert scan(tiny, files, [PooledFeatures("conv4")], progress=False, threads=2).threads == 2


def test_batch_size_is_timed_only_for_big_jobs_and_remembered_on_disk(tiny, monkeypatch, tmp_path):
    import importlib

    scan_module = importlib.import_module("convlens.read.scan")

    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(scan_module, "_BATCH_CACHE", {})
    timed = []
    real = scan_module._timed
    monkeypatch.setattr(scan_module, "_timed", lambda read, x: timed.append(len(x)) or real(read, x))
    assert scan_module.choose_batch_size(tiny, ["conv4"], images=64) == scan_module.DEFAULT_BATCH and not timed
    chosen = scan_module.choose_batch_size(tiny, ["conv4"], images=10**6, candidates=(2, 4), repeats=1)
    assert timed == [2, 4] and engine.load_plan(tiny, ["conv4"])["eager_batch"] == chosen
    monkeypatch.setattr(scan_module, "_BATCH_CACHE", {})  # a new process: read from disk, not timed again
    assert scan_module.choose_batch_size(tiny, ["conv4"], images=64) == chosen and timed == [2, 4]
