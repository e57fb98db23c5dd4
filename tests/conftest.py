"""Shared fixtures. The local Hugging Face Hub server is configured at import, before huggingface_hub is.

huggingface_hub reads HF_ENDPOINT, HF_HOME and friends once, when it is imported, so this module
binds a Hub-compatible HTTP server on 127.0.0.1, points the environment at it and at a temporary
HF_HOME, and disables Xet and telemetry, all before any test module imports kanzoo or the client.

The fused CPU kernels are off for the suite (and the processes it starts): compiling them for every
shape and family the model and task tests use would cost minutes. ``tests/test_kernels.py`` turns
them on and checks them against the eager path, which every other test covers. Their first backward
would make this process's malloc keep freed memory (``kanzoo.runtime``); the suite leaves malloc as
it is, and ``tests/test_runtime.py`` checks that behaviour in child processes.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

import pytest

os.environ["KANZOO_FUSED_KERNELS"] = "0"
os.environ["KANZOO_KEEP_FREED_MEMORY"] = "0"

if "huggingface_hub" in sys.modules:  # pragma: no cover - only if a plugin imported it before us
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could point it at the local Hub")


@dataclass
class _Repo:
    revisions: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files, as the Hub keeps them
    gated: bool = False


class LocalHub:
    """A tiny Hugging Face Hub: download, metadata and commit routes over an in-memory store."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stage(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike[str]], revision: str = "main",
              gated: bool = False) -> str:
        """Put files into ``repo_id`` at ``revision`` (paths are read); returns the new commit hash."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            repo.gated = gated
            tree = repo.revisions.setdefault(revision, {})
            for name, data in files.items():
                tree[name] = data.encode() if isinstance(data, str) else (
                    data if isinstance(data, bytes) else Path(data).read_bytes())
            return self._commit(repo, revision)

    def file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self.repos[repo_id].revisions[revision][path]

    def downloads(self, repo_id: str) -> int:
        """How many GET requests fetched a file of ``repo_id``."""
        return sum(1 for method, path in self.requests if method == "GET" and path.startswith(f"/{repo_id}/resolve/"))

    @staticmethod
    def _commit(repo: _Repo, revision: str) -> str:
        digest = hashlib.sha1(revision.encode())
        for name, data in sorted(repo.revisions[revision].items()):
            digest.update(name.encode() + hashlib.sha256(data).digest())
        repo.commits[revision] = digest.hexdigest()
        repo.snapshots[repo.commits[revision]] = dict(repo.revisions[revision])
        return repo.commits[revision]


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: Any, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode())

        def _error(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
            self._send(status, json.dumps({"error": message}).encode(),
                       {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _repo(self, repo_id: str, revision: str | None = None) -> tuple[_Repo, dict[str, bytes]] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}")
                return None
            if repo.gated:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted")
                return None
            revision = revision or "main"
            tree = repo.revisions.get(revision, repo.snapshots.get(revision))
            if tree is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo, tree

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((self.command, path))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo_id = f"{parts[2]}/{parts[3]}"
                if len(parts) == 4 or parts[4] == "revision":
                    return self._info(repo_id, parts[5] if len(parts) > 5 else None)
                if parts[4] == "tree":
                    return self._tree(repo_id, parts[5], "/".join(parts[6:]))
            self._error(404, "EntryNotFound", f"no route for {path}")

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            found = self._repo(repo_id, revision)
            if found is None:
                return
            repo, tree = found
            commit = {"X-Repo-Commit": revision if revision in repo.snapshots else repo.commits.get(revision, "0" * 40)}
            if filename not in tree:
                return self._error(404, "EntryNotFound", f"{filename} does not exist", commit)
            data = tree[filename]
            headers = dict(commit, ETag=f'"{hashlib.sha256(data).hexdigest()}"', **{"Accept-Ranges": "bytes"})
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and self.command == "GET":
                start = int(ranged[6:].split("-")[0] or 0)
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, data[start:], headers, "application/octet-stream")

        def _info(self, repo_id: str, revision: str | None) -> None:
            found = self._repo(repo_id, revision)
            if found is None:
                return
            repo, tree = found
            sha = revision if revision in repo.snapshots else repo.commits.get(revision or "main", "0" * 40)
            self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "gated": False,
                        "siblings": [{"rfilename": name} for name in sorted(tree)]})

        def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
            found = self._repo(repo_id, revision)
            if found is None:
                return
            _, tree = found
            entries = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in sorted(tree.items()) if name.startswith(prefix)]
            self._json(entries)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self._body()
            with hub.lock:
                hub.requests.append(("POST", path))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts == ["api", "validate-yaml"]:
                content = json.loads(body or b"{}").get("content", "")
                if not content.startswith("---\n"):
                    return self._error(400, "BadRequest", "README.md metadata must start with a '---' YAML block")
                return self._json({"errors": [], "warnings": []})
            if parts == ["api", "repos", "create"]:
                request = json.loads(body or b"{}")
                repo_id = f"{request.get('organization') or 'user'}/{request['name']}"
                exists = repo_id in hub.repos
                hub.repos.setdefault(repo_id, _Repo())
                hub.repos[repo_id].commits.setdefault("main", "0" * 40)
                created = {"url": f"{hub.url}/{repo_id}", "name": repo_id}
                if exists:  # like the Hub: 409, and the body still carries the url
                    return self._send(409, json.dumps(dict(created, error="You already created this model repo"))
                                      .encode(), {"X-Error-Message": "You already created this model repo"})
                return self._json(created)
            if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                if action == "preupload":
                    files = json.loads(body).get("files", [])
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                if action == "commit":
                    return self._commit(repo_id, revision, body)
                if action == "branch":
                    repo = hub.repos[repo_id]
                    repo.revisions.setdefault(revision, dict(repo.revisions["main"]))
                    LocalHub._commit(repo, revision)
                    return self._json({})
            self._error(404, "EntryNotFound", f"no route for POST {path}")

        def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
            found = self._repo(repo_id, revision)
            if found is None:
                return
            files: dict[str, bytes] = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    return self._error(400, "BadRequest", f"the local Hub does not support {item['key']!r}")
            sha = hub.stage(repo_id, files, revision)
            self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                        "pullRequestUrl": None})

    return Handler


HUB = LocalHub()
_HF_HOME = tempfile.mkdtemp(prefix="kanzoo-test-hf-home-")
os.environ.update({
    "HF_ENDPOINT": HUB.url,
    "HF_HOME": _HF_HOME,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
})
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE", "KANZOO_WEIGHTS_MANIFEST"):
    os.environ.pop(_name, None)
HUB.start()
atexit.register(shutil.rmtree, _HF_HOME, True)
atexit.register(HUB.close)


@pytest.fixture
def local_hub() -> LocalHub:
    """The local Hub server (``HF_ENDPOINT`` points at it); stage files with ``local_hub.stage(repo, {...})``."""
    return HUB


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty Hugging Face cache for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode, as if ``HF_HUB_OFFLINE=1`` had been set before starting Python."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def weights_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a test weights manifest and make it the active one (``KANZOO_WEIGHTS_MANIFEST``)."""

    def write(entries: Mapping[str, Any]) -> Path:
        path = tmp_path / f"manifest-{len(list(tmp_path.glob('manifest-*.json')))}.json"
        path.write_text(json.dumps(entries), encoding="utf-8")
        monkeypatch.setenv("KANZOO_WEIGHTS_MANIFEST", str(path))
        return path

    return write


@pytest.fixture(scope="module")
def single_thread():
    """Tiny shapes gain nothing from intra-op threads, which only add latency on a busy 2-core machine (module-wide,
    so that the module's own fixtures, trained runs included, run on one thread too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _eager_expansion():
    """Keep the fused CPU kernels off unless a test turns them on (``fused_kernels`` fixture)."""
    from kanzoo.layers.execution import compiled as kernels

    kernels.set_fused_kernels(False)
    yield
    kernels.set_fused_kernels(False)


@pytest.fixture
def timm_hub(local_hub, hf_cache):
    """Stage a timm-format repository (``config.json`` + ``model.safetensors``, random weights) for a timm name.

    ``stage('resnet10t.c3_in1k')`` serves the repository timm downloads that tag from (its ``hf_hub_id``) and
    returns ``(repo_id, state_dict)``; timm and kanzoo then fetch it through huggingface_hub, as from the Hub.
    """
    import timm
    import torch
    from safetensors.torch import save
    from timm.models import resolve_pretrained_cfg, split_model_name_tag
    from timm.models._hub import save_config_for_hf

    def stage(name: str, seed: int = 0) -> tuple[str, dict[str, Any]]:
        arch, tag = split_model_name_tag(name)
        torch.manual_seed(seed)
        model = timm.create_model(name)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        config = Path(tempfile.mkdtemp(prefix="kanzoo-timm-config-")) / "config.json"
        save_config_for_hf(model, str(config))
        repo_id = resolve_pretrained_cfg(arch, pretrained_cfg=tag or None).hf_hub_id
        local_hub.stage(repo_id, {"config.json": config.read_bytes(), "model.safetensors": save(state)})
        shutil.rmtree(config.parent, ignore_errors=True)
        return repo_id, state

    return stage
