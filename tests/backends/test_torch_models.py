"""The torch models: shapes, gradients, parameter counts and name handling."""
import pytest

torch = pytest.importorskip("torch")

from minidyn.backends.torch_models import MODEL_NAMES, build_model, count_parameters  # noqa: E402
from minidyn.errors import ConfigError  # noqa: E402

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
# wrn-16-2 stands in for the big WideResNets (their construction is checked on the meta device).
FAST = ["softmax", "mlp", "cnn4", "cnn8", "wrn-16-2", "preact-resnet18", "preact-resnet50"]


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", FAST)
def test_forward_backward(name, shape):
    model = build_model(name, shape, 10)
    model.train()
    x = torch.rand(2, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10) and out.dtype == torch.float32
    out.logsumexp(dim=1).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_flat_models_take_any_shape(name):
    model = build_model(name, (5,), 3)
    assert model(torch.rand(4, 5)).shape == (4, 3)


def test_mlp_and_softmax_layouts_match_the_numpy_models():
    mlp = {k: tuple(v.shape) for k, v in build_model("mlp", MNIST, 10).state_dict().items()}
    assert mlp == {"fc1.weight": (256, 784), "fc1.bias": (256,), "fc2.weight": (256, 256),
                   "fc2.bias": (256,), "fc3.weight": (10, 256), "fc3.bias": (10,)}
    soft = {k: tuple(v.shape) for k, v in build_model("softmax", CIFAR, 10).state_dict().items()}
    assert soft == {"fc1.weight": (10, 3072), "fc1.bias": (10,)}


@pytest.mark.parametrize("name,shape,expected", [
    ("wrn-34-10", CIFAR, 46_160_474),      # Madry et al.'s / TRADES's WRN-34-10
    ("wrn-28-10", CIFAR, 36_479_194),
    ("wrn-16-2", CIFAR, 691_674),
    ("preact-resnet18", CIFAR, 11_172_170),
    ("preact-resnet50", CIFAR, 23_513_162),
    ("cnn4", MNIST, 421_738),
    ("cnn8", CIFAR, 1_638_762),
    ("mlp", MNIST, 269_322),
    ("softmax", MNIST, 7_850),
])
def test_parameter_counts(name, shape, expected):
    with torch.device("meta"):  # no memory, no initialisation cost
        model = build_model(name, shape, 10)
    assert count_parameters(model) == expected


def test_wrn_34_10_is_the_madry_architecture():
    with torch.device("meta"):
        model = build_model("wrn-34-10", CIFAR, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 3 * 5 * 2 + 2 + 1  # stem, 15 blocks x 2 convs, 3 projection shortcuts
    assert model.fc.in_features == 640


@pytest.mark.parametrize("name", ["wrn-30-10", "wrn-8-2", "wrn-34-0"])
def test_wrn_depth_must_be_6n_plus_4(name):
    with pytest.raises(ConfigError, match="depth"):
        build_model(name, CIFAR, 10)


def test_unknown_model_lists_the_names():
    with pytest.raises(ConfigError) as info:
        build_model("resnet9000", CIFAR, 10)
    message = str(info.value)
    assert "resnet9000" in message and "\n" not in message
    for name in ("cnn4", "cnn8", "mlp", "softmax", "preact-resnet18", "wrn-<depth>-<width>"):
        assert name in message
    assert "wrn-34-10" in MODEL_NAMES


@pytest.mark.parametrize("name,shape", [("cnn4", (784,)), ("cnn8", (3, 4, 4)), ("wrn-16-2", (32, 32))])
def test_bad_input_shapes(name, shape):
    with pytest.raises(ConfigError):
        build_model(name, shape, 10)


def test_needs_two_classes():
    with pytest.raises(ConfigError):
        build_model("mlp", MNIST, 1)


def test_models_describe_themselves():
    model = build_model("CNN4", MNIST, 10)  # names are case-insensitive
    assert model.minidyn_arch == {"model": "cnn4", "input_shape": [1, 28, 28], "num_classes": 10}
