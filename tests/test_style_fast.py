"""Fast style transfer: the transformation network, conditional instance norm, training, files, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import convlens
from convlens.synthesize.fast_style import (
    FastStyleConfig,
    PerceptualLoss,
    TransformNet,
    apply_fast_style,
    load_fast_style,
    pretrained_path,
    save_fast_style,
    train_fast_style,
)


@pytest.mark.parametrize("hw", [(32, 32), (37, 50), (17, 9), (64, 48)])
def test_transform_net_accepts_any_size(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = TransformNet(width=8, blocks=1).eval()
    y = net(torch.rand(2, 3, *hw))
    assert y.shape == (2, 3, *hw)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_transform_net_is_deterministic_in_eval_and_batch_independent() -> None:
    torch.manual_seed(0)
    net = TransformNet(width=8, blocks=2).eval()
    x = torch.rand(3, 3, 40, 36)
    a, b = net(x), net(x)
    assert torch.equal(a, b)
    # instance norm: each image is stylised on its own, batched == one by one
    torch.testing.assert_close(torch.cat([net(x[i:i + 1]) for i in range(3)]), a, atol=1e-5, rtol=1e-4)


def test_conditional_instance_norm_mixes_styles() -> None:
    torch.manual_seed(0)
    net = TransformNet(n_styles=2, width=8, blocks=1).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(1, 3, 24, 24)
    torch.testing.assert_close(net(x, 1), net(x, [0.0, 1.0]))
    a, b, m = net(x, 0), net(x, 1), net(x, [0.5, 0.5])
    assert not torch.allclose(a, b)
    assert not torch.allclose(m, a) and not torch.allclose(m, b)
    with pytest.raises(convlens.UserError, match="styles 0-1"):
        net(x, 2)
    with pytest.raises(convlens.UserError, match="3 mixing weights"):
        net(x, [0.2, 0.3, 0.5])


def test_one_training_step_lowers_the_loss(tiny: convlens.Model) -> None:
    torch.manual_seed(0)
    style = torch.rand(1, 3, 32, 32) ** 3
    loss = PerceptualLoss(tiny, [style], style_size=32, style_weight=3.0, tv_weight=0.05)
    net = TransformNet(width=8, blocks=1).train()
    batch = torch.rand(2, 3, 32, 32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before, _ = loss(net(batch), batch, 0)
    opt.zero_grad()
    before.backward()
    opt.step()
    after, parts = loss(net(batch), batch, 0)
    assert float(after) < float(before)
    assert set(parts) == {"content", "style", "tv", "total"}


def test_train_save_resume_and_load(tiny: convlens.Model, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        arr = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(photos / f"p{i}.png")
    styles = [torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) ** 2]
    cfg = FastStyleConfig(styles=["a", "b"], loss_model="tiny", size=32, style_size=32, batch_size=2, width=8,
                          blocks=1)
    saved: list[int] = []
    ckpt = tmp_path / "ckpt.pt"

    def checkpoint(net, state, opt) -> None:
        save_fast_style(ckpt, net, cfg, state, opt)
        saved.append(state.step)

    _, state = train_fast_style(tiny, styles, photos, config=cfg, steps=3, checkpoint=checkpoint,
                                  checkpoint_every=2)
    assert state.step == 3 and len(state.history) == 3 and saved == [2, 3]
    assert [h["style_index"] for h in state.history] == [0, 1, 0]
    net2, cfg2, state2, opt2 = load_fast_style(ckpt)
    assert cfg2 == cfg and state2 is not None and state2.step == 3 and opt2 is not None
    net3, state3 = train_fast_style(tiny, styles, photos, config=cfg2, steps=5, net=net2, state=state2,
                                    optimizer_state=opt2)
    assert state3.step == 5 and len(state3.history) == 5
    small = save_fast_style(tmp_path / "half.pt", net3, cfg2, half=True)
    net4, _, none_state, _ = load_fast_style(small)
    x = torch.rand(1, 3, 20, 28)
    torch.testing.assert_close(apply_fast_style(net4, x), apply_fast_style(net3, x), atol=2e-2, rtol=0)
    assert none_state is None


def test_bad_model_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(2)}, bad)
    with pytest.raises(convlens.UserError, match="not a convlens fast-style model"):
        load_fast_style(bad)
    with pytest.raises(convlens.UserError, match="no such"):
        load_fast_style(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(convlens.UserError, match="cannot read"):
        load_fast_style(tmp_path / "junk.pt")


def test_shipped_network_is_small_and_loads() -> None:
    path = pretrained_path()
    if not path.is_file():
        pytest.skip("the pretrained fast-style network has not been added yet")
    assert path.stat().st_size < 5 * 2**20
    net, cfg, _, _ = load_fast_style(path)
    assert cfg.loss_model == "efficientnet_lite0" and cfg.styles
    y = apply_fast_style(net, torch.rand(1, 3, 33, 47))
    assert y.shape == (1, 3, 33, 47)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convlens", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=300)


def test_cli_fast_style_apply_and_errors(tmp_path: Path) -> None:
    net = TransformNet(n_styles=2, width=8, blocks=1)
    cfg = FastStyleConfig(styles=["a", "b"], width=8, blocks=1)
    model = save_fast_style(tmp_path / "m.pt", net, cfg, half=True)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (30, 20), (200, 100, 50)).save(imgs / "one.png")
    Image.new("RGB", (17, 25), (20, 100, 250)).save(imgs / "two.jpg")
    r = _cli("fast-style", "apply", str(model), str(imgs), "--mix", "0.5,0.5", "--out", str(tmp_path / "o"),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "one_stylized.png").size == (30, 20)
    assert Image.open(tmp_path / "o" / "two_stylized.png").size == (17, 25)
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["seconds_per_image"] > 0 and len(doc["images"]) == 2
    bad = _cli("fast-style", "apply", str(model), str(imgs), "--mix", "1,1,1", cwd=tmp_path)
    assert bad.returncode == 2 and "mixing weights" in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("fast-style", "apply", str(tmp_path / "nope.pt"), str(imgs), cwd=tmp_path)
    assert missing.returncode == 2 and "no such" in missing.stderr


def test_apply_size_comes_from_the_training_scale(tmp_path: Path) -> None:
    """Issue 13: the default apply side is stored with the network; an old file gets 4x its training crop."""
    net = TransformNet(width=8, blocks=1)
    saved = save_fast_style(tmp_path / "new.pt", net, FastStyleConfig(styles=["a"], size=24, width=8, blocks=1))
    loaded, _, _, _ = load_fast_style(saved)
    assert loaded.apply_max_side == 96 and "stored" in loaded.apply_source
    doc = torch.load(saved, weights_only=False)
    assert doc["apply"] == {"train_size": 24, "max_side": 96}
    del doc["apply"]  # a checkpoint from before the scale was stored
    torch.save(doc, tmp_path / "old.pt")
    old, _, _, _ = load_fast_style(tmp_path / "old.pt")
    assert old.apply_max_side == 96 and "training crops" in old.apply_source
    x = torch.rand(1, 3, 150, 120)
    assert apply_fast_style(old, x, max_side="auto").shape[-2:] == (96, 77)
    assert apply_fast_style(old, x).shape[-2:] == (150, 120)  # the library keeps the size unless asked
    Image.new("RGB", (200, 100), (200, 100, 50)).save(tmp_path / "big.png")
    for extra, size in (([], (96, 48)), (["--max-side", "0"], (200, 100)), (["--max-side", "50"], (50, 25))):
        r = _cli("fast-style", "apply", str(saved), str(tmp_path / "big.png"), *extra, "--out", str(tmp_path / "o"),
                 cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / "o" / "big_stylized.png").size == size
    shipped, _, _, _ = load_fast_style(pretrained_path())
    assert shipped.apply_max_side == 512
