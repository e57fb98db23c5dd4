"""Pretrained weights end to end through the real huggingface_hub client and the local Hub server (conftest)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import uuid
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save, save_file

import kanzoo
from kanzoo.hub import (CONVERTERS, ChecksumMismatchError, CheckpointMismatchError, HubDownloadError,
                        ManifestError, WeightsNotFoundError, WeightsUnavailableOfflineError, manifest,
                        validate_manifest)

DATA = Path(__file__).parent / "data"
CASE = "vgg_kagn_bn_11v4_small"
# the golden network: VGG11v4 widths / 4 (width multiplier 1), bottleneck Gram of degree 3, 10 classes
SMALL = dict(cfg=[4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M", 64, 64], width_multiplier=1, degree=3,
             num_classes=10)


@pytest.fixture(scope="module")
def golden() -> dict[str, object]:
    tensors = load_file(DATA / "tck_goldens.safetensors")
    state = {k.split("/state/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{CASE}/state/")}
    return {"state": state, "bytes": save(state), "input": tensors[f"{CASE}/input"],
            "output": tensors[f"{CASE}/output"]}


def _entry(repo_id: str, data: bytes | None, **overrides) -> dict:
    """A manifest entry for the small golden network served from the local Hub."""
    entry = copy.deepcopy(manifest()["vggkan_11.tck_in1k"])
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    entry.update(hf_hub_id=repo_id, sha256=sha, verified=sha is not None, num_classes=10)
    entry.update(overrides)
    return entry


def _repo() -> str:
    return f"kanzoo-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def served(local_hub, weights_manifest, hf_cache, golden):
    """The golden original-format checkpoint staged on the local Hub as vggkan_11.tck_in1k."""
    repo_id = _repo()
    local_hub.stage(repo_id, {"model.safetensors": golden["bytes"]})
    weights_manifest({"vggkan_11.tck_in1k": _entry(repo_id, golden["bytes"])})
    return repo_id


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_packaged_manifest_schema_and_published_checkpoints():
    data = manifest()
    validate_manifest(data, converters=CONVERTERS)
    repos = {entry["hf_hub_id"]: (name, entry) for name, entry in data.items()}
    assert set(repos) >= {"brivangl/vgg_kagn11_v2", "brivangl/vgg_kagn11_v4", "brivangl/vgg_kagn_bn11_v4"}
    assert repos["brivangl/vgg_kagn_bn11_v4"][0] == "vggkan_11.tck_in1k"
    assert repos["brivangl/vgg_kagn_bn11_v4"][1]["metrics"]["top1"] == 68.50
    for name, entry in data.items():
        assert entry["sha256"] is not None or entry["verified"] is False, name
        with torch.device("meta"):
            model = kanzoo.create_model(name)  # the tag, built with its model_args
        assert sum(p.numel() for p in model.parameters()) == entry["num_params"], name
        assert model.pretrained_cfg["hf_hub_id"] == entry["hf_hub_id"]  # cfgs come from the manifest


def test_manifest_validation_reports_each_problem():
    entry = dict(manifest()["vggkan_11.tck_in1k"], verified=True, mean=[0.5], crop_pct=2)
    del entry["license"]
    with pytest.raises(ManifestError, match="missing field"):
        validate_manifest({"vggkan_11.x": entry})
    entry["license"] = "mit"
    with pytest.raises(ManifestError) as info:
        validate_manifest({"vggkan_11.x": entry, "Bad Name": entry}, converters=CONVERTERS)
    message = str(info.value)
    for expected in ("verified=true needs a sha256", "mean must be a list of 3", "crop_pct", "architecture.tag"):
        assert expected in message


def test_kanzoo_list_pretrained_shows_manifest_tags():
    assert {"vggkan_11.tck_in1k", "vggkan_11_v2_in.tck_in1k", "vggkan_11_v4_in.tck_in1k"} <= set(
        kanzoo.list_models(pretrained=True))


def test_download_verify_convert_and_cache(served, local_hub, golden):
    model = kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    torch.testing.assert_close(_logits(model, golden["input"]), golden["output"], atol=1e-5, rtol=0)
    assert local_hub.downloads(served) == 1
    again = timm.create_model("vggkan_11.tck_in1k", pretrained=True, **SMALL)  # from the cache
    torch.testing.assert_close(_logits(again, golden["input"]), golden["output"], atol=1e-5, rtol=0)
    assert local_hub.downloads(served) == 1


def test_unverified_file_logs_its_sha256_once(local_hub, weights_manifest, hf_cache, golden, caplog):
    repo_id = _repo()
    local_hub.stage(repo_id, {"model.safetensors": golden["bytes"]})
    weights_manifest({"vggkan_11.tck_in1k": _entry(repo_id, None)})
    with caplog.at_level(logging.WARNING, logger="kanzoo.hub.download"):
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    sha = hashlib.sha256(golden["bytes"]).hexdigest()
    assert sum(sha in record.getMessage() for record in caplog.records) == 1


def test_tampered_file_raises_and_leaves_a_clean_cache(local_hub, weights_manifest, hf_cache, golden):
    repo_id = _repo()
    tampered = golden["bytes"][:-1] + bytes([golden["bytes"][-1] ^ 1])
    local_hub.stage(repo_id, {"model.safetensors": tampered})
    weights_manifest({"vggkan_11.tck_in1k": _entry(repo_id, golden["bytes"])})
    with pytest.raises(ChecksumMismatchError) as info:
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    message = str(info.value)
    assert "model.safetensors" in message and hashlib.sha256(golden["bytes"]).hexdigest() in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert not [p for p in hf_cache.rglob("*") if p.is_file() and p.stat().st_size > 1000]
    local_hub.stage(repo_id, {"model.safetensors": golden["bytes"]})  # the Hub is fixed: the next call succeeds
    model = kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    torch.testing.assert_close(_logits(model, golden["input"]), golden["output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("problem, error, words", [
    ("repo", WeightsNotFoundError, "repository"),
    ("file", WeightsNotFoundError, "not found"),
    ("revision", WeightsNotFoundError, "revision 'v9'"),
    ("gated", HubDownloadError, "gated"),
])
def test_missing_or_refused_weights_give_one_line_errors(problem, error, words, local_hub, weights_manifest,
                                                         hf_cache, golden):
    repo_id = _repo()
    entry = _entry(repo_id, golden["bytes"])
    if problem != "repo":
        local_hub.stage(repo_id, {"other.bin": b"x"}, gated=problem == "gated")
    if problem == "revision":
        entry["revision"] = "v9"
    weights_manifest({"vggkan_11.tck_in1k": entry})
    with pytest.raises(error, match=words) as info:
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    assert "\n" not in str(info.value) and info.value.__suppress_context__


def test_unreachable_hub_is_a_clear_error(weights_manifest, hf_cache, golden, monkeypatch):
    from huggingface_hub import constants

    from huggingface_hub.utils import _http

    closed_port = "http://127.0.0.1:9"  # the discard port: nothing listens there
    monkeypatch.setattr(constants, "ENDPOINT", closed_port)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed_port + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)  # the client's 5 retries, without the waits
    weights_manifest({"vggkan_11.tck_in1k": _entry(_repo(), golden["bytes"])})
    with pytest.raises(HubDownloadError, match="unreachable"):
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)


def test_offline_uses_the_cache_and_fails_fast_without_it(served, local_hub, golden, monkeypatch):
    from huggingface_hub import constants

    kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)  # fills the cache
    before = len(local_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    torch.testing.assert_close(_logits(model, golden["input"]), golden["output"], atol=1e-5, rtol=0)
    assert len(local_hub.requests) == before
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(constants.HF_HUB_CACHE).parent / "empty"))
    with pytest.raises(WeightsUnavailableOfflineError, match="kanzoo download vggkan_11.tck_in1k"):
        kanzoo.create_model("vggkan_11", pretrained=True, **SMALL)
    assert len(local_hub.requests) == before


def test_head_reset_in_chans_adaptation_and_features_only(served, golden):
    reference = kanzoo.create_model("vggkan_11", pretrained=True, **SMALL).eval()
    x = golden["input"]
    other = kanzoo.create_model("vggkan_11", pretrained=True, **dict(SMALL, num_classes=4)).eval()
    assert other.get_classifier().out_features == 4
    torch.testing.assert_close(other.forward_features(x), reference.forward_features(x))
    gray = x.mean(1, keepdim=True)
    one = kanzoo.create_model("vggkan_11", pretrained=True, **dict(SMALL, in_chans=1))
    torch.testing.assert_close(_logits(one, gray), _logits(reference, gray.expand(-1, 3, -1, -1)), atol=1e-5, rtol=0)
    five = timm.create_model("vggkan_11", pretrained=True, **dict(SMALL, in_chans=5))
    spread = torch.cat([x, x[:, :2]], dim=1)  # channels r g b r g: adapted weights average the repeats
    assert _logits(five, spread).shape == (2, 10)
    assert torch.isfinite(_logits(five, spread)).all()
    features = kanzoo.create_model("vggkan_11", pretrained=True, features_only=True, **SMALL)
    maps = features.eval()(x)
    last = int(reference.feature_info[4]["module"].split(".")[1])
    assert len(maps) == 5
    torch.testing.assert_close(maps[-1], reference.features[: last + 1](x))


def test_local_original_file_and_checkpoint_path_use_the_same_conversion(tmp_path, golden):
    path = tmp_path / "original.safetensors"
    save_file(golden["state"], path)
    for model in (kanzoo.create_model("vggkan_11", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                      **SMALL),
                  kanzoo.create_model("vggkan_11", checkpoint_path=str(path), **SMALL)):
        torch.testing.assert_close(_logits(model, golden["input"]), golden["output"], atol=1e-5, rtol=0)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        kanzoo.create_model("vggkan_11", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                            **dict(SMALL, degree=2))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        kanzoo.create_model("vggkan_11", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "no")))


def test_no_weights_for_an_untagged_architecture_says_so():
    with pytest.raises(WeightsNotFoundError, match="no pretrained weights for 'vggkan_19'"):
        kanzoo.create_model("vggkan_19", pretrained=True, cfg=[4], width_multiplier=1)


def test_model_card_names_the_segmentation_task(tmp_path):
    model = kanzoo.create_model("ukanet_18", width=0.125, num_classes=2)
    card = (kanzoo.save_pretrained(model, tmp_path / "seg") / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "image-classification" not in card


def test_save_pretrained_push_to_hub_and_hf_hub_loading(local_hub, hf_cache, tmp_path, golden):
    model = kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], width_multiplier=1, degree=2, num_classes=3,
                                conv="bottleneck_kacn").eval()
    folder = kanzoo.save_pretrained(model, tmp_path / "saved", metrics={"top1": 12.5}, dataset="shapes",
                                    license="apache-2.0")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vggkan_11" and config["num_classes"] == 3
    assert config["model_args"]["cfg"] == [4, "M", 8] and config["model_args"]["conv"] == "bottleneck_kacn"
    card = (folder / "README.md").read_text()
    assert "| top1 | 12.5 |" in card and "license: apache-2.0" in card and "shapes" in card
    assert "pipeline_tag: image-classification" in card
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    repo_id = _repo()
    url = kanzoo.push_to_hub(model, repo_id, token="test-token", metrics={"top1": 12.5}, dataset="shapes")
    assert repo_id in url
    assert set(local_hub.repos[repo_id].revisions["main"]) == {"README.md", "config.json", "model.safetensors"}
    x = torch.randn(2, 3, 16, 16)
    for build in (kanzoo.create_model, timm.create_model):
        rebuilt = build(f"hf-hub:{repo_id}", pretrained=True)
        assert isinstance(rebuilt, kanzoo.models.VGGKAN) and rebuilt.conv_name == "bottleneck_kacn"
        torch.testing.assert_close(_logits(rebuilt, x), _logits(model, x), atol=0, rtol=0)
    local = kanzoo.create_model(f"local-dir:{folder}", pretrained=True)
    torch.testing.assert_close(_logits(local, x), _logits(model, x), atol=0, rtol=0)
    with pytest.raises(WeightsNotFoundError, match="no-such-branch"):
        kanzoo.create_model(f"hf-hub:{repo_id}@no-such-branch", pretrained=True)
    model.reset_classifier(2)
    kanzoo.push_to_hub(model, repo_id, revision="dev", token="test-token")
    assert kanzoo.create_model(f"hf-hub:{repo_id}@dev", pretrained=True).get_classifier().out_features == 2
    assert kanzoo.create_model(f"hf-hub:{repo_id}", pretrained=True).get_classifier().out_features == 3


def test_save_pretrained_refuses_unsaveable_models_and_leaves_nothing_behind(tmp_path):
    model = kanzoo.create_model("vggkan_11", cfg=[4], width_multiplier=1, norm_layer=torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match="norm_layer"):
        kanzoo.save_pretrained(model, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    features = kanzoo.create_model("vggkan_11", cfg=[4, "M", 4], width_multiplier=1, features_only=True,
                                out_indices=(0, 1))
    with pytest.raises(kanzoo.hub.HubError, match="whole models"):
        kanzoo.save_pretrained(features, tmp_path / "features")


def test_packaged_manifest_is_the_repository_manifest():
    from importlib import resources

    packaged = resources.files("kanzoo").joinpath("weights_manifest.json").read_text(encoding="utf-8")
    assert json.loads(packaged) == json.loads((Path(__file__).resolve().parents[1] / "weights_manifest.json")
                                              .read_text(encoding="utf-8"))


REPO_ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_entry_points_are_generated_from_the_registry(served, golden):
    hubconf = torch.hub._import_module("hubconf", str(REPO_ROOT / "hubconf.py"))
    listed = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    entries = kanzoo.list_models() + kanzoo.list_models(pretrained=True) + ["kanify"]  # kanify: any timm CNN
    assert sorted(listed) == sorted(entries)
    assert "tck_in1k" in hubconf.vggkan_11.__doc__ and hubconf.dependencies
    for name, kwargs in (("vggkan_11", dict(tag="tck_in1k")), ("vggkan_11.tck_in1k", {}), ("vggkan_11", {})):
        model = torch.hub.load(str(REPO_ROOT), name, source="local", pretrained=True, **kwargs, **SMALL)
        torch.testing.assert_close(_logits(model, golden["input"]), golden["output"], atol=1e-5, rtol=0)
    plain = torch.hub.load(str(REPO_ROOT), "vggkan_13", source="local", cfg=[4, "M", 8], width_multiplier=1)
    assert isinstance(plain, kanzoo.models.VGGKAN)


def test_cli_info_and_download(served, local_hub, capsys):
    from kanzoo.cli import main

    assert main(["info", "vggkan_11", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"][0]["name"] == "vggkan_11.tck_in1k" and info["weights"][0]["cached"] is False
    assert main(["download", "vggkan_11"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vggkan_11.tck_in1k\t") and Path(out.split("\t")[1].strip()).is_file()
    assert main(["info", "vggkan_11.tck_in1k"]) == 0
    assert "(cached)" in capsys.readouterr().out
    assert main(["download", "vggkan_11", "vggkan_19"]) == 2  # the others are still downloaded
    assert "no pretrained weights named 'vggkan_19'" in capsys.readouterr().err
    assert main(["info", "no_such_model"]) == 2


def test_fused_kan_weights_adapt_to_other_input_channels(tmp_path):
    """Plain Gram stem (InstanceNorm layout): the fused (O, C*E, k, k) weight is adapted per input channel."""
    tensors = load_file(DATA / "tck_goldens.safetensors")
    case = "vgg_kagn_11v2_small"
    path = tmp_path / "v2.safetensors"
    save_file({k.split("/state/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{case}/state/")}, path)
    small = dict(cfg=[4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M", 32, 32], width_multiplier=1, degree=3,
                 num_classes=10, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    rgb = kanzoo.create_model("vggkan_11_v2_in", **small)
    x = tensors[f"{case}/input"]
    torch.testing.assert_close(_logits(rgb, x), tensors[f"{case}/output"], atol=1e-5, rtol=0)
    gray = x.mean(1, keepdim=True)
    one = kanzoo.create_model("vggkan_11_v2_in", in_chans=1, **small)
    assert one.features[0].weight.shape == (4, 1 * 5, 3, 3)  # base branch + 4 Gram bases of one channel
    torch.testing.assert_close(_logits(one, gray), _logits(rgb, gray.expand(-1, 3, -1, -1)), atol=1e-5, rtol=0)
    six = kanzoo.create_model("vggkan_11_v2_in", in_chans=6, **small)
    torch.testing.assert_close(_logits(six, x.repeat(1, 2, 1, 1)), _logits(rgb, x), atol=1e-5, rtol=0)
