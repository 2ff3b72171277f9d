"""FGSM / iterative FGSM / PGD: the eps-ball and box hold exactly, FGSM is the textbook one-liner, reports add up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convlens.adversarial import attack, evaluate_attack, fgsm, norms, pgd, project, quantize
from convlens.images import to_pil, to_pixels


def _batch(n: int = 6, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255  # 8-bit pixels, as photos are
    x[:, :, :4] = 0.0  # saturated rows: the box must bite
    x[:, :, -4:] = 1.0
    return x


def _inside(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if norm == "linf":
        assert bool(((adv - x).abs() <= eps).all()), float((adv - x).abs().max() - eps)
    else:
        assert bool((norms(adv, x)[1] <= eps).all())


@pytest.mark.parametrize("method", ["fgsm", "ifgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("linf", 0.01), ("l2", 0.5)])
def test_every_attack_stays_in_ball_and_box(tiny, method: str, norm: str, eps: float) -> None:
    x = _batch()
    y = tiny(x).argmax(1)
    adv = attack(tiny, x, y, method=method, eps=eps, steps=5, norm=norm, generator=torch.Generator().manual_seed(1),
                 early_stop=False)
    _inside(adv, x, eps, norm)
    assert float((adv - x).abs().max()) > 0  # it did move


def test_project_is_exact_where_naive_clamping_is_not() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 16, 16, generator=g)
    far = torch.rand(64, 3, 16, 16, generator=g) * 3 - 1
    worst = 0
    for eps in (0.01, 0.05, 0.1, 2 / 255, 8 / 255):  # k/255 happens to round inwards; 0.01 does not
        naive = (x + (far - x).clamp(-eps, eps)).clamp(0, 1)
        worst += int(((naive - x).abs() > eps).sum())  # float rounding pushes the naive answer outside
        _inside(project(far, x, eps, "linf"), x, eps, "linf")
        _inside(project(far, x, eps * 50, "l2"), x, eps * 50, "l2")
    assert worst > 0, "the data should exercise the rounding case"
    assert torch.equal(project(far, x, None), far.clamp(0, 1))


def test_fgsm_is_the_one_liner(tiny) -> None:
    x, eps = _batch(), 8 / 255
    y = tiny(x).argmax(1)
    xr = x.clone().requires_grad_(True)
    ref = (x + eps * torch.autograd.grad(F.cross_entropy(tiny(xr), y), xr)[0].sign()).clamp(0, 1)
    ours = fgsm(tiny, x, y, eps=eps)
    # the one-liner's float32 rounding slips outside the true (float64) ball; ours moves those pixels back in
    outside = (ref.double() - x.double()).abs() > eps
    assert torch.equal(ours[~outside], ref[~outside])
    assert ((ours.double() - x.double()).abs() <= eps).all()
    assert torch.allclose(ours[outside], ref[outside], rtol=0, atol=1e-7)
    # targeted: the one-liner descends the target's cross-entropy
    t = (y + 1) % 5
    reft = (x - eps * torch.autograd.grad(F.cross_entropy(tiny(xr), t), xr)[0].sign()).clamp(0, 1)
    ours_t = fgsm(tiny, x, t, eps=eps, targeted=True)
    ok = (reft.double() - x.double()).abs() <= eps
    assert torch.equal(ours_t[ok], reft[ok])
    assert torch.allclose(ours_t, reft, rtol=0, atol=1e-7)


def test_attacks_do_not_touch_parameters_or_inputs(tiny, tiny_module) -> None:
    x = _batch()
    before = x.clone()
    pgd(tiny, x, tiny(x).argmax(1), steps=3)
    assert torch.equal(x, before)
    assert all(p.grad is None for p in tiny_module.parameters())


def test_early_stop_leaves_already_fooled_images_alone(tiny) -> None:
    x = _batch()
    y = tiny(x).argmax(1)
    wrong = (y + 1) % 5  # "true" labels the model already gets wrong: nothing to do
    adv = attack(tiny, x, wrong, method="ifgsm", eps=8 / 255, steps=5)
    assert torch.equal(adv, x)
    moved = attack(tiny, x, wrong, method="ifgsm", eps=8 / 255, steps=5, early_stop=False)
    assert not torch.equal(moved, x)


def test_pgd_is_reproducible_with_a_generator(tiny) -> None:
    x = _batch()
    y = tiny(x).argmax(1)
    a = pgd(tiny, x, y, steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd(tiny, x, y, steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_quantize_is_the_png_round_trip() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(quantize(x)[1], to_pixels(to_pil(x[1])))


def test_evaluate_attack_numbers_add_up(tiny) -> None:
    x = _batch(12)
    with torch.no_grad():
        pred = tiny(x).argmax(1)
    labels = pred.clone()
    labels[:3] = (labels[:3] + 1) % 5  # three images the model "gets wrong"
    rep = evaluate_attack(tiny, x, labels, method="pgd", eps=16 / 255, steps=5, batch_size=5,
                          generator=torch.Generator().manual_seed(0))
    correct = pred == labels
    assert rep.n == 12 and rep.clean_accuracy == pytest.approx(9 / 12)
    assert torch.equal(rep.adversarial[~correct], x[~correct])  # only correctly classified images are attacked
    with torch.no_grad():
        adv_pred = tiny(rep.adversarial).argmax(1)
        png_pred = tiny(torch.stack([to_pixels(to_pil(a)) for a in rep.adversarial])).argmax(1)
    assert rep.robust_accuracy == pytest.approx(float((adv_pred == labels).float().mean()))
    assert rep.success_rate == pytest.approx(float((adv_pred[correct] != labels[correct]).float().mean()))
    assert rep.success_rate_after_png == pytest.approx(float((png_pred[correct] != labels[correct]).float().mean()))
    linf, l2 = norms(rep.adversarial[correct], x[correct])
    assert rep.mean_linf == pytest.approx(float(linf.mean())) and rep.mean_linf <= float(torch.tensor(16 / 255))
    assert rep.mean_l2 == pytest.approx(float(l2.mean()))
    assert torch.equal(rep.attacked, correct) and torch.equal(rep.fooled, correct & (adv_pred != labels))
    with torch.no_grad():
        p_clean, p_adv = tiny(x).softmax(1), tiny(rep.adversarial).softmax(1)
    torch.testing.assert_close(rep.clean_prob, p_clean.gather(1, pred[:, None])[:, 0])
    torch.testing.assert_close(rep.adv_prob, p_adv.gather(1, adv_pred[:, None])[:, 0])
    assert set(rep.summary()) == {"n", "clean_accuracy", "robust_accuracy", "success_rate", "success_rate_after_png",
                                  "mean_linf", "mean_l2", "seconds_per_image"}


def test_transfer_to_the_same_network_transfers_everything(tiny) -> None:
    x = _batch(8, size=32)  # the tiny model's input size: no resizing on the way to the second network
    rep = evaluate_attack(tiny, x, None, method="pgd", eps=1.0, alpha=0.25, steps=10, transfer_to=tiny,
                          generator=torch.Generator().manual_seed(0))
    assert rep.clean_accuracy is None
    assert rep.transfer is not None and rep.success_rate is not None and rep.success_rate > 0
    assert rep.transfer.transfer_rate == pytest.approx(1.0)
