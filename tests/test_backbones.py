"""Backbone names as timm takes them (tags, ``hf-hub:``, ``local-dir:``), checked offline, and the hub check routed
through the standard proxy variables (training/model.py)."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from timm.models import save_for_hf

from birads_calc.cli import main
from birads_calc.training import model as model_module
from birads_calc.training.model import (
    BackboneError,
    BiradsClassifier,
    PretrainedWeightsError,
    check_backbone_name,
    create_backbone,
    proxy_for,
)
from tests.factories import make_tiny_dataset

HUB_NAME = "hf-hub:timm/resnet18.a1_in1k"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """No weights or configs cached, and no proxy unless a test sets one."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for variable in ("https_proxy", "http_proxy", "all_proxy", "no_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    return tmp_path / "hf" / "hub"


def test_a_mistyped_pretrained_tag_lists_the_tags_timm_knows():
    with pytest.raises(BackboneError) as info:
        check_backbone_name("resnet18.bogus_tag")
    message = str(info.value)
    assert "'bogus_tag'" in message and "--model.backbone resnet18.bogus_tag" in message
    for full in timm.list_pretrained("resnet18.*"):  # every tag timm has, e.g. tv_in1k (the paper config's)
        assert full.split(".", 1)[1] in message
    check_backbone_name("resnet18.tv_in1k")  # a known tag passes, offline


def test_an_unknown_architecture_suggests_close_names():
    with pytest.raises(BackboneError, match="unknown timm backbone 'resnt18'; did you mean resnet18"):
        check_backbone_name("resnt18")


@pytest.mark.parametrize("name", ["hf-hub:resnet18", "hf-hub:timm/resnet18 a1", "hf-hub:"])
def test_a_malformed_hub_id_is_refused(name):
    with pytest.raises(BackboneError, match=f"--model.backbone {name}: .*hf-hub:<org>/<name>"):
        check_backbone_name(name)


def test_hub_names_parse_offline_and_are_refused_only_for_lack_of_network(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the discard port: the proxy refuses at once
    check_backbone_name(HUB_NAME)  # a valid name: no error, no network
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone(HUB_NAME, 1, pretrained=False)  # timm needs the model's config.json from the hub
    assert time.perf_counter() - start < 10  # no minute of retries
    message = str(info.value)
    assert "through the proxy http://127.0.0.1:9 (set by HTTPS_PROXY" in message  # the proxy it tried, named
    assert "huggingface.co cannot be reached" in message and "local-dir:" in message  # a way out without network
    assert "unknown" not in message


def test_no_proxy_goes_direct_and_says_so(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "example.org,hub.invalid")
    monkeypatch.setattr(model_module, "hub_endpoint_host", lambda: "hub.invalid")  # never resolves
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone(HUB_NAME, 1, pretrained=True)
    message = str(info.value)
    assert "hub.invalid cannot be reached directly" in message and "127.0.0.1:9" not in message


def test_proxy_variables_are_read_as_http_clients_read_them():
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": "http://plain:3"}
    assert proxy_for("https://huggingface.co/", env) == ("http://lower:2", "https_proxy")  # lower case first
    assert proxy_for("http://huggingface.co/", env) == ("http://plain:3", "HTTP_PROXY")  # by scheme
    assert proxy_for("https://huggingface.co/", {"ALL_PROXY": "socks5://all:4"}) == ("socks5://all:4", "ALL_PROXY")
    bypass = {**env, "NO_PROXY": "localhost, .huggingface.co"}
    assert (
        proxy_for("https://cdn.huggingface.co/", bypass) is None
        and proxy_for("https://huggingface.co/", bypass) is None
    )
    assert proxy_for("https://example.com/", bypass) == ("http://lower:2", "https_proxy")
    assert proxy_for("https://huggingface.co/", {"NO_PROXY": "*", **env}) is None
    assert proxy_for("https://huggingface.co/", {}) is None


def test_local_dir_backbone_loads_the_folder_weights(tmp_path):
    saved = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    save_for_hf(saved, tmp_path / "model")  # config.json + weights, as timm writes a model for the hub
    model = BiradsClassifier(backbone=f"local-dir:{tmp_path / 'model'}", pretrained=True)
    mine, theirs = model.backbone.state_dict(), saved.state_dict()
    body = [k for k in theirs if not k.startswith("fc.")]
    assert body and all(torch.equal(mine[k], theirs[k]) for k in body)  # every weight but the new head
    assert mine["fc.weight"].shape == (1, theirs["fc.weight"].shape[1])
    (tmp_path / "model" / "pytorch_model.bin").unlink()
    with pytest.raises(PretrainedWeightsError, match="holds none of model.safetensors, pytorch_model.bin"):
        BiradsClassifier(backbone=f"local-dir:{tmp_path / 'model'}", pretrained=True)
    with pytest.raises(BackboneError, match="has no config.json"):
        check_backbone_name(f"local-dir:{tmp_path / 'nowhere'}")


def test_hub_name_from_the_local_cache_offline(empty_hf_cache, monkeypatch):
    """A hub model downloaded before (in $HF_HOME) builds with the network off, as timm's own names do."""
    snapshot = empty_hf_cache / "models--acme--tiny" / "snapshots" / ("0" * 40)
    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=10), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    backbone = create_backbone("hf-hub:acme/tiny", 1, pretrained=True)
    assert backbone.pretrained_cfg.get("hf_hub_id") == "acme/tiny"
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE is set"):
        create_backbone("hf-hub:acme/other", 1, pretrained=False)  # not cached: refused, saying why


def test_the_cli_refuses_a_bad_tag_with_the_message(tmp_path, capsys):
    manifest = make_tiny_dataset(tmp_path, patients=4, size=128)
    code = main(["fit", "--config", "proposed", "--config", "demo", "--data.manifest", str(manifest),
                 "--runs_root", str(tmp_path / "runs"), "--model.backbone", "resnet18.bogus_tag"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "timm knows no pretrained tag 'bogus_tag' for resnet18" in captured.err
    assert "Traceback" not in captured.err
