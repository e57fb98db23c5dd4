"""Pinning third-party weights (`kanzoo download --record`) and checking the manifest whenever it is read."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

import kanzoo
from kanzoo.cli import main
from kanzoo.hub import ManifestError, download_weights, manifest, validate_manifest

TAG = "vggkan_11.tck_in1k"
FILE = manifest()[TAG]["filename"]


def _unpinned(repo_id: str) -> dict:
    entry = copy.deepcopy(manifest()[TAG])
    entry.update(hf_hub_id=repo_id, revision="main", sha256=None, verified=False)
    return entry


def test_record_pins_each_file_to_its_commit_and_sha256(local_hub, weights_manifest, hf_cache, tmp_path,
                                                        monkeypatch, capsys) -> None:
    repo_id = f"kanzoo-test/pin-{uuid.uuid4().hex[:8]}"
    first = local_hub.stage(repo_id, {FILE: b"the weights as published"})
    active = weights_manifest({TAG: _unpinned(repo_id), "vggkan_11_v2_in.tck_in1k": _unpinned("kanzoo-test/gone")})
    pinned = tmp_path / "pinned.json"
    assert main(["download", "vggkan_11", "--record", str(pinned)]) == 0
    out = capsys.readouterr().out
    assert f"commit {first}" in out and f"KANZOO_WEIGHTS_MANIFEST={pinned}" in out
    entries = json.loads(pinned.read_text())
    validate_manifest(entries)
    assert entries[TAG]["revision"] == first and entries[TAG]["verified"] is True
    assert entries[TAG]["sha256"] == hashlib.sha256(b"the weights as published").hexdigest()
    assert entries["vggkan_11_v2_in.tck_in1k"]["revision"] == "main"  # not asked for: left as it was
    assert json.loads(active.read_text())[TAG]["revision"] == "main"  # the active manifest is not touched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    local_hub.stage(repo_id, {FILE: b"the branch moved on"})
    monkeypatch.setenv("KANZOO_WEIGHTS_MANIFEST", str(pinned))
    cache = tmp_path / "fresh-cache"
    assert download_weights(TAG, cache_dir=cache).read_bytes() == b"the weights as published"

    # recording again updates the file in place; a tag that cannot be fetched is one line, exit 2
    assert main(["download", TAG, "vggkan_11_v2_in.tck_in1k", "--record", str(pinned)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "error: vggkan_11_v2_in.tck_in1k:" in captured.err
    assert json.loads(pinned.read_text())[TAG]["revision"] == first


@pytest.mark.parametrize("broken, words", [
    ({TAG: "not an entry"}, f"{TAG}: the entry must be a JSON object"),
    ({TAG: {"metrics": "top1 68.5"}}, "missing field(s)"),
    ("wrong type", "metrics must be an object"),
    ("[1, 2]", "the manifest must be a JSON object"),
    ("{not json", "cannot read KANZOO_WEIGHTS_MANIFEST="),
])
def test_a_malformed_manifest_is_one_line_wherever_it_is_read(broken, words, weights_manifest, tmp_path,
                                                              capsys) -> None:
    if broken == "wrong type":
        broken = {TAG: dict(copy.deepcopy(manifest()[TAG]), metrics="top1 68.5")}
    path = weights_manifest({})
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(ManifestError, match=re.escape(words)) as info:
        kanzoo.create_model("vggkan_11", pretrained=True)
    assert "\n" not in str(info.value) and "unset KANZOO_WEIGHTS_MANIFEST" in str(info.value)
    for command in (["info", "vggkan_11"], ["download", "vggkan_11"], ["predict", TAG, str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, (command, err)


def test_importing_kanzoo_with_a_malformed_manifest_still_works(tmp_path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({TAG: {"hf_hub_id": 5}}))
    env = dict(os.environ, KANZOO_WEIGHTS_MANIFEST=str(path))
    done = subprocess.run([sys.executable, "-m", "kanzoo", "info", "vggkan_11"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: KANZOO_WEIGHTS_MANIFEST={str(path)!r} is invalid: {TAG}: missing field")
