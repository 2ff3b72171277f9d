"""Universal perturbations: inside the eps-ball, fooling rate measured on held-out images only; the CLI commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convlens.cli.adversarial as cli_adv
from convlens.adversarial import check_disjoint, fooling_rate, universal_perturbation
from convlens.errors import UserError
from convlens.images import to_pil


def _batch(n: int, seed: int, size: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


@pytest.mark.parametrize("norm,eps", [("linf", 10 / 255), ("l2", 1.0)])
def test_pattern_stays_in_its_ball(tiny, norm: str, eps: float) -> None:
    r = universal_perturbation(tiny, _batch(20, 0), eps=eps, norm=norm, epochs=2, batch_size=8,
                               generator=torch.Generator().manual_seed(0))
    v = r.perturbation
    assert v.shape == (3, 24, 24)
    assert (v < 0).any() and (v > 0).any()  # a pattern, not a pixel image: it may darken as well as brighten
    if norm == "linf":
        assert float(v.abs().max()) <= eps and float(v.abs().max()) > 0
    else:
        assert float(v.double().norm()) <= eps
    assert r.train_images == 20 and r.steps == 6 and len(r.history) == 6


def test_fooling_rate_counts_changed_top_classes(tiny) -> None:
    x = _batch(10, 1)
    v = torch.zeros(3, 24, 24)
    assert fooling_rate(tiny, x, v)[0] == 0.0
    v = torch.full((3, 24, 24), 0.5)
    rate, clean, pert = fooling_rate(tiny, x, v)
    with torch.no_grad():
        assert torch.equal(pert, tiny((x + v).clamp(0, 1)).argmax(1))
    assert rate == pytest.approx(float((clean != pert).float().mean()))


def test_check_disjoint_refuses_shared_images() -> None:
    a, b = _batch(5, 2), _batch(5, 3)
    check_disjoint(a, b)
    with pytest.raises(UserError, match="held-out"):
        check_disjoint(a, torch.cat([b, a[3:4]]))


@pytest.fixture
def tiny_ts(tiny_module, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.jit.trace(tiny_module, torch.rand(1, 3, 224, 224)).save(str(path))
    return path


def _folder(path: Path, x: torch.Tensor, labels: list[int] | None = None) -> Path:
    path.mkdir()
    for i, im in enumerate(x):
        to_pil(im).save(path / f"im{i}.png")
    if labels is not None:
        (path / "LABELS.csv").write_text("file,wnid,class_index,name\n" + "".join(
            f"im{i}.png,n0,{c},c{c}\n" for i, c in enumerate(labels)))
    return path


def test_universal_cli_measures_on_holdout_only(tiny_ts: Path, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from convlens.cli import main

    train = _folder(tmp_path / "train", _batch(6, 4, 224))
    hold = _folder(tmp_path / "hold", _batch(5, 5, 224))
    seen: list[torch.Tensor] = []
    real = cli_adv.universal_perturbation

    def spy(model, x, **kw):
        seen.append(x.clone())
        return real(model, x, **kw)

    monkeypatch.setattr(cli_adv, "universal_perturbation", spy)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["universal", str(train), "--holdout", str(hold), "--model", str(tiny_ts),
                                    "--eps", "16/255", "--epochs", "1", "--batch-size", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["universal"]) == {"fooling_rate", "eps", "train_images", "holdout_images"}
    assert doc["universal"]["train_images"] == 6 and doc["universal"]["holdout_images"] == 5
    # built on the construction folder only ...
    assert len(seen) == 1 and seen[0].shape[0] == 6
    model = cli_adv.load_model(str(tiny_ts))
    xh = model.load(sorted(hold.glob("*.png")))
    check_disjoint(seen[0], xh)
    # ... and the reported rate is the held-out rate of the saved pattern
    v = torch.load(out / "perturbation.pt")
    assert float(v.abs().max()) <= 16 / 255
    assert doc["universal"]["fooling_rate"] == pytest.approx(fooling_rate(model, xh, v)[0])
    assert (out / "perturbation.png").is_file() and (out / "universal.png").is_file()


def test_universal_cli_refuses_overlapping_folders(tiny_ts: Path, tmp_path: Path) -> None:
    train = _folder(tmp_path / "train", _batch(3, 4, 224))
    r = subprocess.run([sys.executable, "-m", "convlens", "universal", str(train), "--holdout", str(train),
                        "--model", str(tiny_ts), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2 and "both FOLDER and --holdout" in r.stderr and "Traceback" not in r.stderr


def test_attack_and_fool_cli_write_the_issue_keys(tiny_ts: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from convlens.cli import main

    x = _batch(4, 6, 224)
    model = cli_adv.load_model(str(tiny_ts))
    with torch.no_grad():
        labels = model(x).argmax(1).tolist()
    folder = _folder(tmp_path / "imgs", x, labels)
    out = tmp_path / "att"
    res = CliRunner().invoke(main, ["attack", str(folder), "--model", str(tiny_ts), "--method", "pgd", "--eps",
                                    "16/255", "--steps", "3", "--out", str(out), "--transfer-to", str(tiny_ts)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["attack"]) == {"n", "clean_accuracy", "robust_accuracy", "success_rate", "success_rate_after_png",
                                  "mean_linf", "mean_l2", "seconds_per_image"}
    assert doc["attack"]["clean_accuracy"] == 1.0 and doc["attack"]["mean_linf"] <= float(torch.tensor(16 / 255))
    assert len(list((out / "images").glob("*.png"))) == 4 and "transfer" in doc
    out2 = tmp_path / "fool"
    res = CliRunner().invoke(main, ["fool", str(folder / "im0.png"), "--model", str(tiny_ts), "--target", "3",
                                    "--unbounded", "--max-steps", "30", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    f = json.loads((out2 / "result.json").read_text())["fool"]
    assert {"original", "target", "linf", "l2", "steps"} <= set(f)
    assert set(f["original"]) == set(f["target"]) == {"index", "label", "prob"} and f["target"]["index"] == 3
    assert (out2 / "fooling.png").is_file()
