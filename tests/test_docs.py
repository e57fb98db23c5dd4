"""Every ``python`` block of README.md, CONTRIBUTING.md and docs/*.md runs, and the docs' links resolve.

Each block runs in a fresh namespace inside a temporary working directory, compiled under its
markdown file's name and line numbers, so a traceback points at the line in the markdown. An HTML
comment on the line right before a block declares what it needs (the table in CONTRIBUTING.md):

    <!-- docs-test: hub -->              weights of the manifest tags and kanify: names it names, from the local Hub
                                         (random values; timm-format repositories for timm's CNNs)
    <!-- docs-test: data=images -->      my_images/{train,val}/<class>/*.png and photo.jpg
    <!-- docs-test: data=masks -->       my_masks/{train,val}/{images,masks}/*.png and scan.png
    <!-- docs-test: data=checkpoint -->  model.safetensors, a vggkan_11 state dict
    <!-- docs-test: subprocess -->       run in a fresh Python process
    <!-- docs-test: skip=REASON -->      skipped, with the reason
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kanzoo
from kanzoo.hub import manifest
from kanzoo.tasks.synthetic import (make_classification_folder, make_segmentation_folder, pattern_image,
                                    shapes_sample)

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
FILES = ["README.md", "CONTRIBUTING.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
QUICK_START = ('python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/kanzoo quickstart\n'
               ".venv/bin/python -m pytest -q\n")

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
DATA_KINDS = ("images", "masks", "checkpoint")
FLAGS = ("hub", "subprocess")


@dataclass
class Block:
    path: str
    line: int  # 1-based line of the block's first code line
    heading: str
    index: int  # 1-based among the python blocks under this heading
    code: str
    flags: set[str] = field(default_factory=set)
    data: list[str] = field(default_factory=list)
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path}#{slug(self.heading)}-{self.index}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def parse_marker(text: str) -> tuple[set[str], list[str], str | None]:
    """``(flags, data kinds, skip reason)`` of a marker's text; unknown words raise ValueError."""
    text, _, skip = text.partition("skip=")
    flags, data = set(), []
    for word in text.split():
        if word.startswith("data="):
            kind = word.removeprefix("data=")
            if kind not in DATA_KINDS:
                raise ValueError(f"unknown docs-test data {kind!r}; known: {DATA_KINDS}")
            data.append(kind)
        elif word in FLAGS:
            flags.add(word)
        else:
            raise ValueError(f"unknown docs-test marker {word!r}; known: {FLAGS}, data=..., skip=...")
    return flags, data, (skip.strip() or None)


def blocks(path: str) -> list[Block]:
    """The python blocks of a markdown file, with the marker right before each."""
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    found, heading, counts, i = [], "", {}, 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            heading_match = _HEADING.match(lines[i])
            if heading_match:
                heading = heading_match.group(2)
            i += 1
            continue
        indent, language, start = fence.group(1), fence.group(2), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if language == "python":
            code = "\n".join(line.removeprefix(indent) for line in lines[start:i]) + "\n"
            counts[heading] = counts.get(heading, 0) + 1
            marker = _MARKER.match(lines[start - 2]) if start >= 2 else None
            flags, data, skip = parse_marker(marker.group(1)) if marker else (set(), [], None)
            found.append(Block(path, start + 1, heading, counts[heading], code, flags, data, skip))
        i += 1
    return found


ALL_BLOCKS = [block for path in FILES for block in blocks(path)]


# ---------------------------------------------------------------------------------------------
# What the markers set up

_WEIGHTS: dict[str, bytes] = {}


def _weights(architecture: str) -> bytes:
    """A state dict of ``architecture`` at its default arguments (random values), as safetensors bytes."""
    if architecture not in _WEIGHTS:
        from safetensors.torch import save

        torch.manual_seed(0)
        model = kanzoo.create_model(architecture)
        _WEIGHTS[architecture] = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return _WEIGHTS[architecture]


def _cnn_weights(entry: dict) -> dict[str, bytes]:
    """For a tag converted from a timm CNN (``timm/resnet18.tv_in1k``): a timm-format repository of random weights."""
    import timm
    from safetensors.torch import save
    from timm.models._hub import save_config_for_hf

    source = entry["hf_hub_id"].split("/", 1)[1].partition(".")[0]
    if source not in _WEIGHTS:
        torch.manual_seed(0)
        cnn = timm.create_model(source)
        _WEIGHTS[source] = save({k: v.contiguous() for k, v in cnn.state_dict().items()})
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "config.json"
            save_config_for_hf(cnn, str(config))
            _WEIGHTS[f"{source}/config.json"] = config.read_bytes()
    return {entry["filename"]: _WEIGHTS[source], "config.json": _WEIGHTS[f"{source}/config.json"]}


def _images(folder: Path) -> None:
    make_classification_folder(folder / "my_images", train_per_class=8, val_per_class=3, size=32, colour_coded=True)
    Image.fromarray(pattern_image("dots", 48, np.random.default_rng(0))).save(folder / "photo.jpg")


def _masks(folder: Path) -> None:
    make_segmentation_folder(folder / "my_masks", train=8, val=3, size=64)
    Image.fromarray(shapes_sample(64, np.random.default_rng(0))[0]).save(folder / "scan.png")


def _checkpoint(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(_weights("vggkan_11"))


DATA: dict[str, Callable[[Path], None]] = {"images": _images, "masks": _masks, "checkpoint": _checkpoint}


@pytest.fixture
def docs_hub(local_hub, weights_manifest, hf_cache, timm_hub):
    """Stage the weights of every manifest tag a block names on the local Hub, in a test manifest, and a timm-format
    repository (random weights) for every ``kanify:`` name."""

    def serve(code: str) -> None:
        for source in sorted(set(re.findall(r"kanify:(\w+(?:\.\w+)?)", code))):
            timm_hub(source)
        entries = copy.deepcopy(manifest())
        for tag, entry in entries.items():
            architecture = tag.partition(".")[0]
            if re.search(rf"\b{re.escape(architecture)}\b", code):
                if (entry["converter"] or "").startswith("timm_"):
                    files = _cnn_weights(entry)
                else:
                    files = {entry["filename"]: _weights(architecture)}
                repo_id = f"kanzoo-docs/{tag}"
                local_hub.stage(repo_id, files, revision=entry["revision"])
                digest = hashlib.sha256(files[entry["filename"]]).hexdigest()
                entry.update(hf_hub_id=repo_id, sha256=digest, verified=True)
        weights_manifest(entries)

    return serve


# ---------------------------------------------------------------------------------------------
# Tests

@pytest.mark.parametrize("block", [pytest.param(block, id=block.id) for block in ALL_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           request: pytest.FixtureRequest) -> None:
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(tmp_path)
    for kind in block.data:
        DATA[kind](tmp_path)
    if "hub" in block.flags:
        request.getfixturevalue("docs_hub")(block.code)
    source = "\n" * (block.line - 1) + block.code  # line numbers of the markdown file
    filename = str(REPO / block.path)
    if "subprocess" in block.flags:
        script = tmp_path / "docs_block.py"
        script.write_text(source, encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (f"{block.path}:{block.line} (lines of docs_block.py = lines of the "
                                      f"markdown) failed:\n{done.stderr[-4000:]}")
        return
    exec(compile(source, filename, "exec"), {"__name__": "__main__"})


def test_markers_are_known_and_stand_before_python_blocks() -> None:
    for path in FILES:
        lines = (REPO / path).read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            marker = _MARKER.match(line)
            if marker:
                parse_marker(marker.group(1))
                fence = _FENCE.match(lines[number]) if number < len(lines) else None
                assert fence and fence.group(2) == "python", f"{path}:{number}: a docs-test marker must stand " \
                                                            "on the line right before a ```python block"


def test_readme_is_a_front_page_with_the_two_quick_start_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    quick_start = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert quick_start.split("```bash\n", 1)[1].split("```", 1)[0] == QUICK_START


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans."""
    return _LINK.findall(re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S)))


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(2)) for m in map(_HEADING.match, text.splitlines()) if m}


@pytest.mark.parametrize("path", FILES)
def test_relative_links_resolve(path: str) -> None:
    source = REPO / path
    for target in _links(source.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (source.parent / file_part).resolve() if file_part else source
        assert linked.exists(), f"{path}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(linked), f"{path}: link to {target}: no such heading"
