"""`minidyn train --backend torch` end to end, and the checkpoint outside minidyn."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

import minidyn  # noqa: E402
from minidyn.cli.main import main  # noqa: E402
from minidyn.data import load_dataset  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "run"
    r = CliRunner().invoke(main, [
        "train", "--backend", "torch", "--device", "cpu", "--limit", "256", "--epochs", "2",
        "--batch-size", "64", "--eval-limit", "64", "--eval-steps", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_default_model_is_cnn4_with_dynamic(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["model"], config["method"], config["eps"]) == ("cnn4", "dynamic", 0.3)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[1]["c_t"] < records[0]["c_t"]
    fosc = np.load(run_dir / "fosc" / "epoch_000.npy", allow_pickle=False)
    assert fosc.shape == (256,) and np.isfinite(fosc).all() and (fosc >= 0).all()


def test_load_model_gives_a_plain_module_that_classifies(run_dir):
    """The checkpoint loads with weights_only=True and as an eval-mode nn.Module on [0, 1]."""
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert raw["meta"]["epoch"] == 2
    model = minidyn.load_model(str(run_dir / "checkpoint.pt"))
    assert isinstance(model, torch.nn.Module) and not model.training
    test = load_dataset("mnist-sample", "test")
    with torch.no_grad():
        logits = model(torch.from_numpy(test.x).float() / 255)
    assert logits.shape == (2000, 10)
    # the same weights: exactly the clean accuracy the run itself measured at the end
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 100.0 * (logits.argmax(1).numpy() == test.y).mean() == pytest.approx(summary["test_clean_acc"])


def test_presets_load_and_options_override_them():
    from minidyn.files.config import TrainConfig, load_preset
    cfg = TrainConfig(**load_preset("paper-cifar10")).resolved()
    assert (cfg.model, cfg.dataset, cfg.eps, cfg.lr_milestones, cfg.dynamic_epochs) == \
        ("cnn8", "cifar10", 8 / 255, [60, 100], 100)
    assert cfg.augment is True
    cfg = TrainConfig(**(load_preset("paper-mnist") | {"epochs": 3})).resolved()
    assert cfg.epochs == 3 and cfg.lr_milestones == [20, 40]
