from pathlib import Path

import pytest
import torch

from sslray.errors import UserError
from sslray.nn.backbones import BACKBONES, BackboneConfig, build_backbone


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_resnet_features_have_num_features(name, width):
    backbone = build_backbone(BackboneConfig(name=name, small_stem=True, in_chans=1))
    assert backbone.num_features == width
    assert backbone(torch.randn(2, 1, 16, 16)).shape == (2, width)


def test_small_stem_keeps_resolution_the_standard_stem_divides_by_four():
    small = build_backbone(BackboneConfig(small_stem=True, in_chans=3)).net
    standard = build_backbone(BackboneConfig(small_stem=False, in_chans=3)).net
    x = torch.randn(1, 3, 32, 32)
    assert small.maxpool(small.conv1(x)).shape[-1] == 32
    assert standard.maxpool(standard.conv1(x)).shape[-1] == 8


def test_standard_stem_accepts_other_channel_counts():
    backbone = build_backbone(BackboneConfig(small_stem=False, in_chans=1))
    assert backbone.net.conv1.in_channels == 1
    assert backbone(torch.randn(2, 1, 64, 64)).shape == (2, 512)


def test_unknown_backbone_lists_choices():
    with pytest.raises(UserError, match="backbone.name.*resnet18.*vit_small"):
        build_backbone(BackboneConfig(name="resnet19"))


def test_vit_only_options_are_refused_for_resnets():
    with pytest.raises(UserError, match="backbone.drop_path_rate"):
        build_backbone(BackboneConfig(name="resnet18", drop_path_rate=0.1))
    with pytest.raises(UserError, match="backbone.depth"):
        build_backbone(BackboneConfig(name="resnet18", depth=2))


def test_registry_has_the_documented_names():
    assert set(BACKBONES) == {"resnet18", "resnet34", "resnet50", "resnet10t", "vit_tiny", "vit_small", "vit_base"}


@pytest.mark.parametrize("width", [16, 32, 64])
def test_resnet10t_width_sets_every_stage(width):
    backbone = build_backbone(BackboneConfig(name="resnet10t", width=width, in_chans=1, small_stem=False))
    assert backbone.num_features == 8 * width
    stages = [backbone.net.get_submodule(f"layer{i}")[0].conv2.out_channels for i in range(1, 5)]
    assert stages == [width, 2 * width, 4 * width, 8 * width]
    assert backbone(torch.randn(2, 1, 28, 28)).shape == (2, 8 * width)


def test_resnet10t_small_stem_keeps_resolution():
    x = torch.randn(1, 1, 28, 28)
    for small_stem, side in ((True, 28), (False, 7)):
        net = build_backbone(BackboneConfig(name="resnet10t", width=16, in_chans=1, small_stem=small_stem)).net
        assert net.maxpool(net.act1(net.bn1(net.conv1(x)))).shape[-1] == side


def test_width_is_refused_where_it_does_not_apply():
    for name in ("resnet18", "vit_tiny"):
        with pytest.raises(UserError, match="backbone.width.*resnet10t only"):
            build_backbone(BackboneConfig(name=name, width=32))
    with pytest.raises(UserError, match="backbone.width: 33 is odd"):
        build_backbone(BackboneConfig(name="resnet10t", width=33))
    with pytest.raises(UserError, match="backbone.depth"):
        build_backbone(BackboneConfig(name="resnet10t", depth=2))


VIT_PRESENT = (Path(__file__).parents[2] / "sslray" / "nn" / "vit.py").exists()


@pytest.mark.skipif(not VIT_PRESENT, reason="sslray/nn/vit.py not written yet")
def test_vit_backbone_through_the_registry():
    backbone = build_backbone(BackboneConfig(name="vit_tiny", img_size=16, patch_size=4, in_chans=1, depth=1))
    assert backbone.num_features == 192
    assert backbone(torch.randn(2, 1, 16, 16)).shape == (2, 192)


def test_vit_patch_size_must_divide_image_size():
    with pytest.raises(UserError, match="backbone.patch_size"):
        build_backbone(BackboneConfig(name="vit_tiny", img_size=30, patch_size=4))


@pytest.mark.parametrize("small_stem", [True, False])
def test_resnet10t_export_hint_loads_the_weights_strictly(tmp_path, small_stem):
    """The line `sslray export` writes beside a resnet10t's weights builds a timm model they load into."""
    from torch import nn

    from sslray.train.export import _how_to_load

    cfg = BackboneConfig(name="resnet10t", width=16, in_chans=1, small_stem=small_stem)
    backbone = build_backbone(cfg).eval()
    path = tmp_path / "backbone.pt"
    torch.save(backbone.net.state_dict(), path)
    scope = {"torch": torch, "nn": nn, "timm": __import__("timm"), "PATH": path}
    exec(_how_to_load(cfg), scope)  # strict load_state_dict: same keys and shapes
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(scope["m"].eval()(x), backbone(x))
