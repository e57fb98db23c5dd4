"""``kanify:`` names with timm's pretrained weights from the local Hub (as timm publishes them), their errors, the
Hub round trip of a kanified model, ``torch.hub`` and the command line (a CNN baseline is one flag away)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import kanzoo
from kanzoo.cli import main
from kanzoo.hub import ModelConfigError, WeightsNotFoundError, WeightsUnavailableOfflineError
from kanzoo.tasks.synthetic import make_classification_folder, make_segmentation_folder, pattern_image

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
SOURCE = "resnet10t.c3_in1k"  # resnet10t's default tag; timm downloads it from timm/resnet10t.c3_in1k


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_pretrained_kanify_name_gives_the_cnns_logits(timm_hub, local_hub) -> None:
    repo_id, _ = timm_hub(SOURCE)
    x = torch.randn(2, 3, 64, 64)
    expected = logits(timm.create_model(SOURCE, pretrained=True), x)
    assert local_hub.downloads(repo_id) == 1
    for name, kwargs in ((f"kanify:{SOURCE}", dict(degree=1)),
                         ("kanify:resnet10t", dict(conv="kacn", degree=2, filter="spatial"))):
        model = kanzoo.create_model(name, pretrained=True, **kwargs)
        assert relative_error(logits(model, x), expected) < 1e-5
    assert local_hub.downloads(repo_id) == 1  # from the cache after the first download
    head = kanzoo.create_model("kanify:resnet10t", pretrained=True, num_classes=4, degree=1).eval()
    with torch.no_grad():  # timm re-initialises the head and keeps the rest
        reference = timm.create_model(SOURCE, pretrained=True).eval().forward_features(x)
        assert head.get_classifier().out_features == 4
        assert relative_error(head.forward_features(x), reference) < 1e-5


def test_a_kanified_model_round_trips_through_the_hub_without_fetching_the_source(timm_hub, local_hub) -> None:
    source_repo, _ = timm_hub(SOURCE)
    model = kanzoo.create_model("kanify:resnet10t", pretrained=True, num_classes=3, filter="no_stem", degree=1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    downloads = local_hub.downloads(source_repo)
    repo_id = f"kanzoo-test/kanified-{uuid.uuid4().hex[:8]}"
    kanzoo.push_to_hub(model, repo_id, token="test-token")
    card = local_hub.file(repo_id, "README.md").decode()
    assert "timm's `resnet10t` with its convolutions turned into `kagn` KAN convolutions" in card
    x = torch.randn(1, 3, 64, 64)
    for build in (kanzoo.create_model, timm.create_model):
        rebuilt = build(f"hf-hub:{repo_id}", pretrained=True)
        assert torch.equal(logits(rebuilt, x), logits(model, x)) and rebuilt.kanify_record.filter == "no_stem"
    assert local_hub.downloads(source_repo) == downloads


def test_a_downloaded_config_cannot_point_the_weights_elsewhere(local_hub, hf_cache, tmp_path) -> None:
    model = kanzoo.create_model("kanify:regnetx_002", num_classes=2, degree=1).eval()
    folder = kanzoo.save_pretrained(model, tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(file=str(tmp_path / "decoy.safetensors"), url="http://127.0.0.1:9/decoy.pth")
    repo_id = f"kanzoo-test/pointing-{uuid.uuid4().hex[:8]}"
    local_hub.stage(repo_id, {"config.json": json.dumps(config), "model.safetensors": folder / "model.safetensors"})
    for build in (kanzoo.create_model, timm.create_model):
        with pytest.raises(ModelConfigError, match=r"pretrained_cfg names where weights are \(file, url\)"):
            build(f"hf-hub:{repo_id}", pretrained=True)


def test_offline_with_an_empty_cache_is_one_line_error(local_hub, hf_cache, hf_offline) -> None:
    with pytest.raises(WeightsUnavailableOfflineError, match="kanzoo download kanify:resnet10t") as info:
        kanzoo.create_model("kanify:resnet10t", pretrained=True)
    assert "\n" not in str(info.value) and info.value.__suppress_context__


def test_a_missing_repository_or_no_weights_at_all_say_so(local_hub, hf_cache) -> None:
    with pytest.raises(WeightsNotFoundError, match="Hub repository 'timm/regnetx_002.pycls_in1k' not found") as info:
        kanzoo.create_model("kanify:regnetx_002", pretrained=True)  # never staged on the local Hub
    assert "\n" not in str(info.value) and info.value.__suppress_context__
    with_weights = {timm.models.get_arch_name(name) for name in timm.list_pretrained("resnet*")}
    bare = sorted(set(timm.list_models("resnet*")) - with_weights)[0]
    with pytest.raises(WeightsNotFoundError, match=f"timm has no pretrained weights for '{bare}'"):
        kanzoo.create_model(f"kanify:{bare}", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="checkpoint file '/no/cnn.safetensors' does not exist"):
        kanzoo.create_model("kanify:resnet10t", pretrained=True,
                            pretrained_cfg_overlay=dict(file="/no/cnn.safetensors"))


def test_a_local_cnn_checkpoint_is_kanified_exactly(tmp_path) -> None:
    cnn = timm.create_model("resnet10t", num_classes=4).eval()
    save_file(cnn.state_dict(), tmp_path / "cnn.safetensors")
    x = torch.randn(1, 3, 32, 32)
    file = str(tmp_path / "cnn.safetensors")  # a fine-tuned CNN: its cfg says how many classes its head has
    for kwargs in (dict(pretrained=True, pretrained_cfg_overlay=dict(file=file, num_classes=4)),
                   dict(checkpoint_path=file)):
        model = kanzoo.create_model("kanify:resnet10t", num_classes=4, degree=1, **kwargs)
        assert relative_error(logits(model, x), logits(cnn, x)) < 1e-5


def test_download_then_offline_info_and_predict(timm_hub, local_hub, tmp_path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    repo_id, _ = timm_hub(SOURCE)
    assert main(["download", "kanify:resnet10t"]) == 0
    name, path = capsys.readouterr().out.strip().split("\t")
    assert name == "kanify:resnet10t" and Path(path).is_file() and path.endswith("model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(local_hub.requests)
    assert main(["info", "kanify:resnet10t", "--model-arg", "degree=1"]) == 0
    text = capsys.readouterr().out
    assert "timm's resnet10t" in text and "14 of 14 convolutions converted" in text
    assert "resnet10t.c3_in1k (default): timm weights from timm/resnet10t.c3_in1k (cached)" in text
    image = tmp_path / "photo.png"
    Image.fromarray(pattern_image("dots", 48, np.random.default_rng(0))).save(image)
    assert main(["predict", "kanify:resnet10t", str(image), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.count("%") == 2  # two ImageNet classes with their probabilities
    assert len(local_hub.requests) == before
    assert main(["info", "kanify:resnt10t"]) == 2
    assert "did you mean 'resnet10t'" in capsys.readouterr().err


def test_torch_hub_kanify_entry_point(timm_hub) -> None:
    timm_hub(SOURCE)
    hubconf = torch.hub._import_module("hubconf", str(REPO / "hubconf.py"))
    assert "kanify" in hubconf.kanify.__doc__
    x = torch.randn(1, 3, 64, 64)
    model = torch.hub.load(str(REPO), "kanify", "resnet10t", source="local", pretrained=True, degree=1)
    assert relative_error(logits(model, x), logits(timm.create_model(SOURCE, pretrained=True), x)) < 1e-5


def test_cli_baseline_and_kanified_runs(tmp_path, capsys) -> None:
    data = make_classification_folder(tmp_path / "data", train_per_class=4, val_per_class=2, size=32,
                                      patterns=("dots", "checkerboard"))
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "4", "--img-size", "32", "--workers", "0",
              "--no-progress", "--no-pretrained"]
    assert main(["finetune", "--model", "resnet10t", "--out", str(tmp_path / "cnn"), *common]) == 0
    assert json.loads((tmp_path / "cnn/best/config.json").read_text())["architecture"] == "resnet10t"
    assert main(["finetune", "--model", "kanify:resnet10t", "--model-arg", "degree=1", "--out", str(tmp_path / "kan"),
                 *common]) == 0
    best = tmp_path / "kan" / "best"
    assert json.loads((best / "config.json").read_text())["model_args"]["source"] == "resnet10t"
    assert main(["eval", str(best), "--data", str(data), "--workers", "0", "--no-progress", "--json"]) == 0
    assert main(["export", str(best), "--format", "torchscript", "--out", str(tmp_path / "kan.pt")]) == 0
    capsys.readouterr()
    for args, words in ((["--model", "resnt10t"], "did you mean: "),
                        (["--model", "resnet10t", "--model-arg", "width=0.5"], "cannot build resnet10t: ")):
        assert main(["finetune", *args, "--out", str(tmp_path / "bad"), *common]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: ") and words in err and "resnet10t" in err and err.count("\n") == 1


def test_cli_segment_takes_a_kanified_encoder_and_refuses_a_classifier(tmp_path, capsys) -> None:
    data = make_segmentation_folder(tmp_path / "masks", train=4, val=2, size=64)
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "2", "--img-size", "64", "--workers", "0",
              "--no-progress", "--no-pretrained", "--overlays", "0"]
    assert main(["segment", "--model", "kanify:resnet10t", "--out", str(tmp_path / "no"), *common]) == 2
    assert "error: kanify:resnet10t is a classifier" in capsys.readouterr().err
    assert main(["segment", "--model", "ukanet", "--model-arg", "encoder=kanify:resnet10t", "--model-arg", "degree=1",
                 "--out", str(tmp_path / "seg"), *common]) == 0
    config = json.loads((tmp_path / "seg/best/config.json").read_text())
    assert config["architecture"] == "ukanet" and config["model_args"]["encoder"] == "kanify:resnet10t"
