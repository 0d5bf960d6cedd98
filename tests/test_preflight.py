"""The preflight: what only Lightning or torch can judge is judged while validating, as one line naming the
user's keys and what would work, before MLflow or the data are touched."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import write_cifar10, write_mnist
from trainlab.config import validate
from trainlab.data import DATASETS, build_datamodule, describe_data
from trainlab.errors import ConfigError, DataError
from trainlab.preflight import preflight

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


def refusal(compose, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(compose(*overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


@no_gpu
def test_an_accelerator_the_machine_lacks_names_those_it_has(compose):
    assert refusal(compose, "trainer.accelerator=gpu") == (
        "trainer.accelerator='gpu': must be one of auto, cpu (the accelerators this machine has) "
        "(Lightning: No supported gpu backend found!)"
    )


def test_a_kernel_larger_than_the_image_names_the_largest_that_fits(compose):
    message = refusal(compose, "model=simple_cnn", "model.kernel_size=40")
    assert message.startswith("model.kernel_size=40: must be at most 27 (torch: Calculated padded input size")
    validate(compose("model=simple_cnn", "model.kernel_size=27"))


def test_a_pool_larger_than_the_conv_output_blames_both_keys(compose):
    # 28 − 25 + 1 = 4 pixels left for a 5×5 pool: a smaller kernel or a smaller pool would do.
    message = refusal(compose, "model=simple_cnn", "model.kernel_size=25", "model.pool=5")
    assert message.startswith(
        "model.kernel_size=25, model.pool=5: must be model.kernel_size at most 24 or model.pool at most 4 "
    )


def test_a_stride_is_bounded_by_the_cifar10_image_not_the_mnist_one(compose):
    assert refusal(compose, "model=simple_cnn", "model.stride=30").startswith(
        "model.stride=30: must be at most 23"
    )
    message = refusal(compose, "data=cifar10", "model=simple_cnn", "model.stride=30")
    assert message.startswith("model.stride=30: must be at most 27")


def test_batch_norm_on_batches_of_one_fails_here_not_at_the_first_training_step(compose):
    message = refusal(compose, "norm=batch", "data.batch_size=1")
    assert message.startswith(
        "data.batch_size=1, norm=batch: must be data.batch_size at least 2 or norm=none "
        "(torch: Expected more than 1 value per channel when training"
    )
    validate(compose("norm=layer", "data.batch_size=1"))


def test_instance_norm_needs_more_than_one_pixel_per_channel(compose):
    # A 27×27 kernel leaves 2×2 pixels: enough. A 28×28 one leaves 1 pixel.
    validate(compose("model=simple_cnn", "norm=instance", "model.kernel_size=27", "model.pool=1"))
    message = refusal(compose, "model=simple_cnn", "norm=instance", "model.kernel_size=28", "model.pool=1")
    assert message.startswith(
        "norm=instance, model.kernel_size=28: must be norm=none or model.kernel_size at most 27 "
        "(torch: Expected more than 1 spatial element when training"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.precision=x"], "trainer.precision='x': must be null or another value Lightning accepts"),
        (["trainer.devices=0"], "trainer.devices=0: must be 'auto' or another value Lightning accepts"),
        (
            ["trainer.strategy=nope"],
            "trainer.strategy='nope': must be 'auto' or another value Lightning accepts",
        ),
        (["+trainer.foo=1"], "trainer.foo=1: must be unset (Lightning: Trainer.__init__() got an unexpected"),
        (
            ["optimizer=momentum", "optimizer.nesterov=true", "optimizer.momentum=0"],
            "optimizer.nesterov=true: must be false or another value torch accepts (torch: Nesterov momentum",
        ),
    ],
)
def test_values_lightning_or_torch_refuse_name_the_key_and_quote_the_library(compose, overrides, message):
    assert refusal(compose, *overrides).startswith(message)


def test_a_population_can_check_plain_member_configs_without_hydra(compose):
    members = [compose("model=simple_cnn", f"model.kernel_size={k}") for k in (5, 40)]
    plain = [OmegaConf.create(OmegaConf.to_container(member)) for member in members]
    preflight(plain[0])
    with pytest.raises(ConfigError, match=r"^model.kernel_size=40: must be at most 27 "):
        preflight(plain[1])


def test_the_preflight_leaves_the_runs_random_numbers_alone(compose):
    cfg = compose("model=simple_cnn", "model.dropout=0.5")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    preflight(cfg)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", sorted(n for n, d in DATASETS.items() if d.kind == "built-in"))
def test_each_data_sets_shape_in_the_table_is_what_its_loader_reads(compose, tmp_path, name):
    if name == "cifar10":
        write_cifar10(tmp_path)
    else:
        write_mnist(tmp_path, folder={"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])
    data = compose(f"data={name}", f"data.root={tmp_path}", "data.download=false").data
    datamodule = build_datamodule(data, seed=0)
    known = describe_data(data)
    assert (datamodule.image_shape, datamodule.num_classes) == (known.image_shape, known.num_classes)


def test_files_whose_images_differ_from_the_table_are_a_data_error_naming_both_shapes(compose, tmp_path):
    import synthetic  # on sys.path through conftest (benchmarks/)

    write_mnist(tmp_path)
    for split, n in (("train", 200), ("t10k", 100)):
        images, _ = synthetic.learnable_images(n, (32, 32), seed=0)
        synthetic.write_idx(tmp_path / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images)
    data = compose(f"data.root={tmp_path}", "data.download=false").data
    with pytest.raises(
        DataError, match=r"^mnist: mnist holds images of shape \(1, 32, 32\) in 10 classes, not "
    ):
        build_datamodule(data, seed=0)
