"""Run folders: safe checkpoints, --overwrite that keeps the old run until the new one has an epoch, the run lock,
durable atomic writes and the repair of what a killed run left."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kanzoo.cli import main as cli_main
from kanzoo import atomic
from kanzoo.tasks import TaskError, finetune
from kanzoo.tasks.lock import LOCK_NAME
from kanzoo.tasks.runs import RunFolder
from kanzoo.tasks.synthetic import make_classification_folder

TINY = dict(epochs=1, batch_size=4, img_size=16, workers=0, progress=False, pretrained=False,
            model_kwargs={"cfg": [4, "M", 8]})


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_classification_folder(tmp_path_factory.mktemp("runs") / "data", train_per_class=4, val_per_class=2,
                                      size=16, patterns=("dots", "checkerboard"), colour_coded=True)


@pytest.fixture(scope="module")
def done_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("done") / "run"
    finetune("vggkan_11", data, out, **TINY)
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_last_pt_holds_only_tensors_and_plain_values(done_run, data, tmp_path) -> None:
    state = torch.load(done_run / "last.pt", weights_only=True)
    assert state["format"] == "kanzoo-run/2" and state["epoch"] == 1
    assert isinstance(state["rng"][0]["numpy"]["keys"], torch.Tensor)
    out = tmp_path / "resumed"
    os.system(f"cp -r {done_run} {out}")
    assert finetune("vggkan_11", data, out, resume=True, **dict(TINY, epochs=2)).history[-1]["epoch"] == 2
    assert not (out / LOCK_NAME).exists()


def test_a_crafted_last_pt_runs_no_code_and_is_one_line(data, tmp_path, capsys) -> None:
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    torch.save({"format": "kanzoo-run/2", "task": "finetune", "payload": RunsCode(marker)}, out / "last.pt")
    args = ["finetune", "--model", "vggkan_11", "--data", str(data), "--out", str(out), "--resume", "--epochs", "2",
            "--img-size", "16", "--workers", "0", "--no-progress", "--no-pretrained", "--model-arg", "cfg=[4, 'M', 8]"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.count("\n") == 1 and err.startswith("error: cannot resume from") and "posix.system" in err
    assert "--overwrite" in err and "Traceback" not in err


def test_old_and_foreign_checkpoints_are_refused_with_the_way_out(data, done_run, tmp_path) -> None:
    out = tmp_path / "old"
    os.system(f"cp -r {done_run} {out}")
    state = torch.load(out / "last.pt", weights_only=True)
    torch.save(dict(state, format="kanzoo-run/1"), out / "last.pt")
    with pytest.raises(TaskError, match="written by an older kanzoo .*kanzoo-run/1.*--overwrite"):
        finetune("vggkan_11", data, out, resume=True, **TINY)
    state["rng"][0]["numpy"]["keys"] = np.zeros(3)  # numpy objects, as the first format held
    torch.save(state, out / "last.pt")
    with pytest.raises(TaskError, match="holds Python objects besides tensors .* not a checkpoint of this kanzoo"):
        finetune("vggkan_11", data, out, resume=True, **TINY)
    torch.save(dict(torch.load(done_run / "last.pt", weights_only=True), epoch="one"), out / "last.pt")
    with pytest.raises(TaskError, match=r"is damaged \(epoch missing or of the wrong type\)"):
        finetune("vggkan_11", data, out, resume=True, **TINY)
    torch.save(torch.load(done_run / "last.pt", weights_only=True), out / "last.pt")
    with pytest.raises(TaskError, match=r"used model_args=\{'cfg': \"\[4, 'M', 8\]\"\}"):
        finetune("vggkan_11", data, out, resume=True, **dict(TINY, model_kwargs={"cfg": [8, "M", 8]}))


@pytest.mark.filterwarnings("ignore:skipped unreadable image")
def test_overwrite_keeps_the_old_run_until_the_new_one_has_an_epoch(data, done_run, tmp_path) -> None:
    out = tmp_path / "run"
    os.system(f"cp -r {done_run} {out}")
    before = _snapshot(out)
    with pytest.raises(TaskError, match="--epochs must be at least 1"):
        finetune("vggkan_11", data, out, overwrite=True, **dict(TINY, epochs=0))
    broken = tmp_path / "broken"
    os.system(f"cp -r {data} {broken}")
    for image in (broken / "val").rglob("*.png"):
        image.write_bytes(b"not an image")
    with pytest.raises(TaskError, match="no readable validation samples"):
        finetune("vggkan_11", broken, out, overwrite=True, **TINY)
    assert _snapshot(out) == before
    (out / "overlays").mkdir()  # an output the new run does not write goes too
    finetune("vggkan_11", data, out, overwrite=True, **dict(TINY, seed=1))
    assert sorted(p.name for p in out.iterdir()) == ["best", "curves.png", "last.pt", "metrics.csv"]
    assert _snapshot(out)["last.pt"] != before["last.pt"]


def test_overwrite_replaces_a_symlinked_best_without_touching_its_target(data, done_run, tmp_path) -> None:
    out, target = tmp_path / "run", tmp_path / "kept"
    os.system(f"cp -r {done_run} {out}")
    os.replace(out / "best", target)
    (out / "best").symlink_to(target, target_is_directory=True)
    finetune("vggkan_11", data, out, overwrite=True, **TINY)
    assert (out / "best").is_dir() and not (out / "best").is_symlink() and (target / "config.json").is_file()


def test_the_lock_refuses_a_second_run_and_is_taken_over_when_stale(tmp_path) -> None:
    first = RunFolder(tmp_path / "run")
    first.prepare()
    second = RunFolder(tmp_path / "run")
    with pytest.raises(TaskError, match=rf"in use by another kanzoo run \(pid {os.getpid()} on host "
                                        rf"{socket.gethostname()}, started .*\); wait for it"):
        second.prepare()
    first.close()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    stale = {"pid": 2 ** 22 + 1, "host": socket.gethostname(), "started": "2020-01-01 00:00:00", "command": "kanzoo"}
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps(stale))  # left by a killed run: nobody holds it
    second.prepare()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    second.close()


def test_a_killed_run_is_repaired_at_the_next_start(tmp_path) -> None:
    out = tmp_path / "run"
    retired = out / ".replaced-0123abcd"
    (retired / "best").mkdir(parents=True)
    (retired / "last.pt").write_bytes(b"old checkpoint")
    (retired / "metrics.csv").write_text("old")
    (out / "best").mkdir()  # the new run got as far as best/, not last.pt: the old run comes back
    (out / "best" / "new").write_text("partial")
    (out / ".last.89abcdef.tmp.pt").write_bytes(b"half")
    RunFolder(out, resume=True).prepare()  # the old run's last.pt counts before the repair
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "best", "last.pt", "metrics.csv"]
    assert (out / "last.pt").read_bytes() == b"old checkpoint" and not list((out / "best").iterdir())
    out2 = tmp_path / "run2"
    (out2 / ".best.0123abcd.old").mkdir(parents=True)  # killed between the two renames of the best/ swap
    (out2 / ".best.0123abcd.old" / "config.json").write_text("{}")
    (out2 / ".best.456789ab.tmp").mkdir()
    (out2 / "last.pt").write_bytes(b"checkpoint")
    (out2 / ".replaced-0123abcd").mkdir()  # the new last.pt is in place: the old run goes
    (out2 / "overlays").mkdir()
    (out2 / "overlays" / ".0001.01234567.tmp.png").write_bytes(b"half")
    RunFolder(out2, resume=True).prepare()
    assert sorted(p.name for p in out2.iterdir()) == [LOCK_NAME, "best", "last.pt", "overlays"]
    assert (out2 / "best" / "config.json").is_file() and not list((out2 / "overlays").iterdir())


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_best_swap_and_atomic_writes_are_durable(tmp_path, monkeypatch, atomic_exchange) -> None:
    synced: list[int] = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    swaps: list[bool] = []
    real_exchange = atomic.exchange
    monkeypatch.setattr(atomic, "exchange",
                        lambda a, b: swaps.append(real_exchange(a, b) if atomic_exchange else False) or swaps[-1])
    run = RunFolder(tmp_path / "run")
    run.prepare()
    for text in ("first", "second"):
        run.replace_dir("best", lambda folder, text=text: (folder.mkdir(), (folder / "a.txt").write_text(text)))
        assert (run.best_dir / "a.txt").read_text() == text
    assert len(synced) >= 6  # each file, the new folder and the run folder, every time
    assert swaps == [atomic_exchange and sys.platform.startswith("linux")]  # the second swap: one atomic exchange
    synced.clear()
    atomic.atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("x"))
    assert len(synced) == 2  # the file, then its folder after the rename
    run.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best"]
