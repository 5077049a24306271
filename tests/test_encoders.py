"""Encoders: output shapes, DropBlock, errors."""

import pytest
import torch

from plasticnet.encoders import Conv4, DropBlock, ResNet12, encoder_output_size, make_encoder


@pytest.mark.parametrize("size,channels,expected", [(28, 1, 64), (32, 3, 256), (84, 3, 1600), (20, 1, 64)])
def test_conv4_output_shape(size, channels, expected):
    enc = Conv4(channels)
    out = enc(torch.randn(2, channels, size, size))
    assert out.shape == (2, expected)
    assert encoder_output_size(enc, channels, size) == expected


def test_conv4_structure_is_protonet():
    enc = Conv4(3)
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64] * 4
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules()) == 4
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in enc.modules()) == 4


@pytest.mark.parametrize("size,expected", [(32, 640 * 2 * 2), (16, 640)])
def test_resnet12_output_shape_and_widths(size, expected):
    enc = ResNet12(3, dropblock_size=2)
    out = enc(torch.randn(2, 3, size, size))
    assert out.shape == (2, expected)
    widths = [b.convs[0].out_channels for b in enc.blocks]
    assert widths == [64, 160, 320, 640]
    assert isinstance(enc.blocks[2].drop, DropBlock) and isinstance(enc.blocks[3].drop, DropBlock)


def test_resnet12_backward_reaches_first_conv():
    enc = ResNet12(1, widths=(8, 16, 24, 32), dropblock_size=2)
    enc(torch.randn(3, 1, 20, 20)).sum().backward()
    assert enc.blocks[0].convs[0].weight.grad.abs().sum() > 0


def test_dropblock_drops_blocks_in_training_only():
    torch.manual_seed(0)
    db = DropBlock(drop_rate=0.3, block_size=3)
    x = torch.ones(4, 8, 12, 12)
    db.eval()
    assert torch.equal(db(x), x)
    db.train()
    y = db(x)
    dropped = (y == 0).float().mean().item()
    assert 0.1 < dropped < 0.5  # about drop_rate of the units
    assert abs(y.mean().item() - 1.0) < 1e-4  # rescaled to keep the mean
    # zeros come in blocks: a dropped unit has a dropped neighbour
    z = (y[0, 0] == 0).float()
    if z.sum() > 0:
        nb = torch.nn.functional.max_pool2d(z[None, None], 3, 1, 1)[0, 0] * z
        assert nb.sum() == z.sum()
    assert torch.equal(DropBlock(0.0, 3).train()(x), x)


def test_make_encoder_errors():
    with pytest.raises(ValueError, match="unknown encoder 'vgg'.*'conv4'"):
        make_encoder("vgg")
    with pytest.raises(ValueError, match="image_size must be >= 16"):
        encoder_output_size(Conv4(1), 1, 8)
    with pytest.raises(ValueError, match="drop_rate"):
        DropBlock(1.5)


def test_dropblock_rate_rises_linearly_over_warmup():
    db = DropBlock(drop_rate=0.3, block_size=3, warmup=10).train()
    x = torch.ones(2, 4, 12, 12)
    assert db.current_rate == 0.0
    assert torch.equal(db(x), x)  # first training batch: rate 0
    for _ in range(4):
        db(x)
    assert int(db.steps) == 5 and abs(db.current_rate - 0.15) < 1e-12
    db.eval()
    db(x)  # evaluation does not advance the schedule
    assert int(db.steps) == 5
    db.train()
    for _ in range(10):
        y = db(x)
    assert db.current_rate == 0.3 and (y == 0).any()
    # the schedule position is saved with the weights (a resumed run continues it)
    fresh = DropBlock(0.3, 3, warmup=10)
    fresh.load_state_dict(db.state_dict())
    assert int(fresh.steps) == 15 and fresh.current_rate == 0.3
    assert DropBlock(0.3, 3).current_rate == 0.3  # warmup 0: fixed rate
    with pytest.raises(ValueError, match="warmup must be a non-negative integer.*-1"):
        DropBlock(0.3, 3, warmup=-1)


def test_resnet12_passes_the_schedule_to_its_dropblocks():
    enc = ResNet12(1, widths=(8, 16, 24, 32), drop_rate=0.2, dropblock_size=2, dropblock_warmup=7)
    blocks = [m for m in enc.modules() if isinstance(m, DropBlock)]
    assert len(blocks) == 2 and all(b.warmup == 7 and b.drop_rate == 0.2 for b in blocks)
    enc.train()(torch.randn(2, 1, 16, 16))
    assert all(int(b.steps) == 1 for b in blocks)


def test_build_encoder_from_task_options():
    from plasticnet.encoders import build_encoder

    conv = build_encoder("conv4", 1, 28, channels=32)
    assert isinstance(conv, Conv4) and encoder_output_size(conv, 1, 28) == 32
    small = build_encoder("resnet12", 3, 32, channels=16, dropblock_warmup=7)
    drops = [m for m in small.modules() if isinstance(m, DropBlock)]
    assert [b.convs[0].out_channels for b in small.blocks] == [16, 40, 80, 160]
    assert {d.block_size for d in drops} == {2} and {d.warmup for d in drops} == {7}
    assert {d.block_size for d in build_encoder("resnet12", 3, 84, channels=16).modules()
            if isinstance(d, DropBlock)} == {5}
    with pytest.raises(ValueError, match="encoder_channels must be a positive integer, got 0"):
        build_encoder("conv4", 1, 28, channels=0)
    with pytest.raises(ValueError, match="unknown encoder 'vgg'"):
        build_encoder("vgg", 1, 28)


def test_load_encoder_lives_in_encoders_and_checks_the_checkpoint(tmp_path):
    from plasticnet.encoders import load_encoder

    enc = Conv4(1, channels=8)
    path = tmp_path / "enc.pt"
    torch.save({"encoder": "conv4", "channels": 1, "state_dict": enc.state_dict()}, path)
    other = load_encoder(Conv4(1, channels=8), path, name="conv4", channels=1)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), other.state_dict().values()))
    with pytest.raises(ValueError, match="the model wants 'conv4' for 3-channel images"):
        load_encoder(Conv4(3, channels=8), path, name="conv4", channels=3)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_encoder(enc, tmp_path / "none.pt", name="conv4", channels=1)
