"""Every command and option, given a missing, empty, zero, negative or garbage value: one ``error: ...`` line on
stderr naming the problem, exit code 2 (1 for a failure while running), no traceback, and nothing written.

The values are checked while the arguments are parsed, before any model is built or data read; the few that
only the library can judge (an unknown model, a missing folder, a model argument the model refuses) fail
before anything is written.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kanzoo
from kanzoo.cli import main
from kanzoo.tasks.synthetic import make_classification_folder, make_segmentation_folder

BAD_NUMBERS = ("0", "-1", "x", "")
TRAIN = "--model vggkan_11 --no-pretrained --model-arg \"cfg=[4,'M',8]\" --data {data} --out {out} --workers 0"
SEGMENT = ("segment --model ukanet_18 --no-pretrained --no-pretrained-encoder --model-arg width=0.125 --data {seg} "
           "--out {out} --workers 0")


def _numbers(command: str, option: str, values=BAD_NUMBERS, words: str = "") -> list[tuple[str, int, str]]:
    return [(f"{command} {option} {shlex.quote(value)}", 2, words or option) for value in values]


CASES: list[tuple[str, int, str]] = [
    ("", 2, "required: COMMAND"),
    ("bogus", 2, "invalid choice: 'bogus'"),
    # list, info, download
    ("list --bogus", 2, "unrecognized arguments"),
    ("list 'zzz*'", 1, "no kanzoo entries match 'zzz*'"),
    ("info", 2, "required: name"),
    ("info ''", 2, "name must not be empty"),
    ("info zzz", 2, "unknown kanzoo model 'zzz'"),
    ("info vggkan_11.nope", 2, "unknown pretrained tag 'nope' for vggkan_11"),
    ("info hf-hub:../../etc", 2, "must be a Hub repository id"),
    ("info kanify:resnet10t --model-arg x", 2, "--model-arg: expects KEY=VALUE"),
    ("info kanify:resnet10t --model-arg ''", 2, "--model-arg: expects KEY=VALUE"),
    ("info kanify:resnet10t --model-arg degree=-1", 2, "degree must be a non-negative integer"),
    ("download", 2, "name at least one tag"),
    ("download ''", 2, "NAME must not be empty"),
    ("download zzz", 2, "no pretrained weights named 'zzz'"),
    ("download vggkan_11 --record ''", 2, "--record must not be empty"),
    ("download vggkan_11 --record {tmp}", 2, "it is a folder"),
    ("download vggkan_11 --record {tmp}/no/such/folder.json", 2, "its folder does not exist"),
    ("download vggkan_11 --record {file}", 2, "cannot read the manifest"),
    ("download kanify:resnet10t --record {tmp}/m.json", 2, "are timm names"),
    # finetune (and the training options segment shares)
    (f"finetune {TRAIN} --model", 2, "--model: expected one argument"),
    ("finetune --data {data} --out {out}", 2, "required: --model"),
    ("finetune --model vggkan_11 --out {out}", 2, "required: --data"),
    ("finetune --model vggkan_11 --data {data}", 2, "required: --out"),
    (f"finetune {TRAIN} --model ''", 2, "--model must not be empty"),
    (f"finetune {TRAIN} --model zzzz", 2, "unknown model 'zzzz'"),
    (f"finetune {TRAIN} --model hf-hub:../../etc", 2, "--model must be a Hub repository id"),
    (f"finetune {TRAIN} --data ''", 2, "--data must not be empty"),
    (f"finetune {TRAIN} --data {{tmp}}/missing", 2, "does not exist"),
    (f"finetune {TRAIN} --data {{file}}", 2, "is not a folder"),
    (f"finetune {TRAIN} --out ''", 2, "--out must not be empty"),
    (f"finetune {TRAIN} --out {{file}}", 2, "is a file; pass a folder"),
    (f"finetune {TRAIN} --resume", 2, "nothing to resume"),
    (f"finetune {TRAIN} --resume --overwrite", 2, "contradict"),
    *_numbers(f"finetune {TRAIN}", "--epochs"),
    *_numbers(f"finetune {TRAIN}", "--batch-size"),
    *_numbers(f"finetune {TRAIN}", "--lr", ("0", "-1", "nan", "inf", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--weight-decay", ("-1", "nan", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--img-size", ("0", "-1", "7", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--workers", ("-1", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--seed", ("-1", "4294967296", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--val-split", ("0", "1", "-0.5", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--push-to-hub", ("", "noslash", "a/b/c", "../x")),
    *_numbers(f"finetune {TRAIN}", "--device", ("garbage", "", "cuda:x", "cpu:0:1")),
    *_numbers(f"finetune {TRAIN}", "--model-arg", ("", "x", "=1", "1a=2")),
    (f"finetune {TRAIN} --model-arg degree=-1", 2, "cannot build vggkan_11: degree must be"),
    (f"finetune {TRAIN} --model-arg nonsense=3", 2, "cannot build vggkan_11"),
    (f"finetune {TRAIN} --allocator garbage", 2, "--allocator: invalid choice"),
    (f"finetune {TRAIN} --bogus", 2, "unrecognized arguments: --bogus"),
    # the KAN regularisation
    *_numbers(f"finetune {TRAIN}", "--kan-l1", ("-1", "nan", "inf", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--kan-entropy", ("-1", "nan", "x", "")),
    (f"finetune {TRAIN} --kan-entropy 1", 2, "give --kan-l1 too"),
    (f"{SEGMENT} --kan-l1 -1", 2, "--kan-l1"),
    (f"{SEGMENT} --kan-entropy 0.5", 2, "give --kan-l1 too"),
    # the recipe, tracking and Hugging Face data options of finetune
    (f"finetune {TRAIN} --opt ''", 2, "--opt must not be empty"),
    (f"finetune {TRAIN} --opt nope", 2, "--opt 'nope' is not one of timm's optimizers"),
    (f"finetune {TRAIN} --sched nope", 2, "--sched: invalid choice: 'nope'"),
    *_numbers(f"finetune {TRAIN}", "--warmup-epochs", ("-1", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--grad-accum"),
    *_numbers(f"finetune {TRAIN}", "--clip-grad", ("0", "-1", "nan", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--layer-decay", ("0", "-1", "x", "")),
    (f"finetune {TRAIN} --layer-decay 1.5", 2, "--layer-decay must be at most 1"),
    *_numbers(f"finetune {TRAIN}", "--ema-decay", ("0", "1", "x", "")),
    (f"finetune {TRAIN} --ema-decay 0.9", 2, "--ema-decay sets the decay of --ema's averaged model; add --ema"),
    (f"finetune {TRAIN} --no-ema --ema-decay 0.9", 2, "add --ema"),
    *_numbers(f"finetune {TRAIN}", "--mixup", ("-1", "nan", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--cutmix", ("-1", "inf", "x", "")),
    *_numbers(f"finetune {TRAIN}", "--label-smoothing", ("-1", "x", "")),
    (f"finetune {TRAIN} --label-smoothing 1", 2, "--label-smoothing must be below 1"),
    (f"finetune {TRAIN} --log bogus", 2, "--log/--log-with: expects tensorboard, wandb or none"),
    (f"finetune {TRAIN} --log ''", 2, "--log/--log-with: expects"),
    (f"finetune {TRAIN} --log-with tensorboard,bogus", 2, "--log/--log-with: expects"),
    (f"finetune {TRAIN} --ema --grad-accum 2 --log tensorboard --resume", 2, "nothing to resume"),
    (f"finetune {TRAIN} --hf-config ''", 2, "--hf-config must not be empty"),
    (f"finetune {TRAIN} --hf-config x", 2, "--hf-config only apply to Hugging Face data"),
    (f"finetune {TRAIN} --hf-label-column label", 2, "--hf-label-column only apply to Hugging Face data"),
    (f"finetune {TRAIN} --data hf:", 2, "--data hf: needs a data set"),
    (f"finetune {TRAIN} --data hf:{{tmp}}/missing", 2, "no such folder"),
    (f"finetune {TRAIN} --data hf:{{data}}", 2, "is not a folder written by Dataset.save_to_disk"),
    (f"finetune {TRAIN} --data hf:{{hf}}", 2, "single split; pass --val-split 0.2"),
    (f"finetune {TRAIN} --data hf:{{hf}} --val-split 0.5 --hf-label-column nope", 2, "has no column 'nope'"),
    (f"finetune {TRAIN} --data hf:{{hf}} --val-split 0.5 --hf-image-column label", 2, "not images"),
    (f"finetune {TRAIN} --data hf:{{hf}} --hf-config x", 2, "--hf-config selects a configuration"),
    (f"finetune {TRAIN} --hf-mask-column x", 2, "unrecognized arguments: --hf-mask-column x"),
    # segment
    *_numbers(SEGMENT, "--num-classes"),
    *_numbers(SEGMENT, "--overlays", ("-1", "x", "")),
    (f"{SEGMENT} --class-names ''", 2, "--class-names must not be empty"),
    (f"{SEGMENT} --class-names a,,b", 2, "--class-names must be distinct, non-empty names"),
    (f"{SEGMENT} --class-names a,a", 2, "--class-names must be distinct"),
    (f"{SEGMENT} --class-names a,b,c,d", 2, "got 4 class names for 3 classes"),
    (f"{SEGMENT} --num-classes 2", 2, "--num-classes to at least 3"),
    *_numbers(SEGMENT, "--epochs"),
    *_numbers(SEGMENT, "--img-size", ("0", "x")),
    (f"{SEGMENT} --img-size 40", 2, "not a multiple of the model's output stride 32"),
    (f"{SEGMENT} --device garbage", 2, "--device 'garbage' is not a device"),
    (f"{SEGMENT} --mixup 0.2", 2, "unrecognized arguments: --mixup 0.2"),
    (f"{SEGMENT} --hf-label-column x", 2, "unrecognized arguments: --hf-label-column x"),
    (f"{SEGMENT} --layer-decay 0.5", 2, "--layer-decay needs a model that groups its layers"),
    *_numbers(SEGMENT, "--grad-accum"),
    (f"{SEGMENT} --sched nope", 2, "--sched: invalid choice"),
    (f"{SEGMENT} --hf-mask-column x", 2, "--hf-mask-column only apply to Hugging Face data"),
    (f"{SEGMENT} --data hf:{{hf}} --val-split 0.5", 2, "needs an image and a mask column"),
    (f"{SEGMENT} --data hf:{{hf}} --val-split 0.5 --hf-mask-column image", 2, "cannot tell the image column"),
    # eval
    ("eval --data {data}", 2, "required: model"),
    ("eval {model}", 2, "required: --data"),
    ("eval '' --data {data}", 2, "model must not be empty"),
    ("eval zzzz --data {data}", 2, "unknown model 'zzzz'"),
    ("eval vggkan_13 --data {data}", 2, "no pretrained weights, so its predictions would be random"),
    ("eval {model} --data ''", 2, "--data must not be empty"),
    ("eval {model} --data {tmp}/missing", 2, "does not exist"),
    *_numbers("eval {model} --data {data}", "--batch-size"),
    *_numbers("eval {model} --data {data}", "--img-size", ("0", "-1", "x")),
    *_numbers("eval {model} --data {data}", "--workers", ("-1", "x")),
    ("eval {model} --data {data} --device garbage", 2, "--device 'garbage' is not a device"),
    # predict
    ("predict {model}", 2, "required: images"),
    ("predict '' {image}", 2, "model must not be empty"),
    ("predict hf-hub:../../etc {image}", 2, "must be a Hub repository id"),
    ("predict {model} ''", 2, "images must not be empty"),
    ("predict {model} {tmp}/missing.png", 2, "image files not found"),
    *_numbers("predict {model} {image}", "--top-k"),
    *_numbers("predict {model} {image}", "--img-size", ("0", "-1", "x")),
    ("predict {model} {image} --out ''", 2, "--out must not be empty"),
    ("predict {model} {image} --device garbage", 2, "--device 'garbage' is not a device"),
    ("predict {segmodel} {image} --out {file}", 2, "is a file; pass a folder for the masks"),
    ("predict {segmodel} {image} {other}", 2, "would both write their mask to"),
    ("predict {segmodel} {image} --img-size 0", 2, "--img-size must be at least 8"),
    # export
    ("export {model}", 2, "required: --out"),
    ("export '' --out {tmp}/m.onnx", 2, "model must not be empty"),
    ("export {model} --out ''", 2, "--out must not be empty"),
    ("export {model} --out {tmp}", 2, "is a folder"),
    ("export {model} --out {tmp}/no/m.onnx", 2, "does not exist; create it first"),
    ("export {model} --out {tmp}/m.onnx --format garbage", 2, "--format: invalid choice"),
    ("export {model} --out {tmp}/m.pt --format exported-program", 2, "must end in .pt2"),
    *_numbers("export {model} --out {tmp}/m.onnx", "--img-size", ("0", "-1", "x")),
    # inspect and prune
    *[case for command in ("inspect", "prune") for case in [
        (f"{command} --data {{data}} --out {{tmp}}/o", 2, "required: model"),
        (f"{command} {{model}} --out {{tmp}}/o", 2, "required: --data"),
        (f"{command} {{model}} --data {{data}}", 2, "required: --out"),
        (f"{command} '' --data {{data}} --out {{tmp}}/o", 2, "MODEL must not be empty"),
        (f"{command} hf-hub:../../etc --data {{data}} --out {{tmp}}/o", 2, "must be a Hub repository id"),
        (f"{command} zzzz --data {{data}} --out {{tmp}}/o", 2, "unknown model 'zzzz'"),
        (f"{command} vggkan_13 --data {{data}} --out {{tmp}}/o", 2, "no pretrained weights"),
        (f"{command} {{model}} --data '' --out {{tmp}}/o", 2, "--data must not be empty"),
        (f"{command} {{model}} --data {{tmp}}/missing --out {{tmp}}/o", 2, "does not exist"),
        (f"{command} {{model}} --data {{data}} --out ''", 2, "--out must not be empty"),
        (f"{command} {{model}} --data {{data}} --out {{file}}", 2, "is a file"),
        *_numbers(f"{command} {{model}} --data {{data}} --out {{tmp}}/o", "--samples"),
        *_numbers(f"{command} {{model}} --data {{data}} --out {{tmp}}/o", "--batch-size"),
        *_numbers(f"{command} {{model}} --data {{data}} --out {{tmp}}/o", "--img-size", ("0", "-1", "x")),
        *_numbers(f"{command} {{model}} --data {{data}} --out {{tmp}}/o", "--workers", ("-1", "x")),
        *_numbers(f"{command} {{model}} --data {{data}} --out {{tmp}}/o", "--seed", ("-1", "x")),
        (f"{command} {{model}} --data {{data}} --out {{tmp}}/o --bogus", 2, "unrecognized arguments: --bogus"),
    ]],
    *_numbers("inspect {model} --data {data} --out {tmp}/o", "--top"),
    ("inspect {model} --data {data} --out {tmp}/o --layers 'zzz*'", 2, "'zzz*'"),
    ("inspect {segmodel} --data {data} --out {tmp}/o", 2, "expected DIR/images/ and DIR/masks/"),
    *_numbers("prune {model} --data {data} --out {tmp}/o", "--max-drop", ("-1", "1", "nan", "x", "")),
    ("prune {model} --data {data} --out {tmp}/o --device garbage", 2, "--device 'garbage' is not a device"),
    # quickstart
    *_numbers("quickstart", "--epochs"),
    *_numbers("quickstart", "--seed", ("-1", "x")),
    ("quickstart --out ''", 2, "--out must not be empty"),
    ("quickstart --out {file}", 2, "is a file; pass a folder"),
    ("quickstart --allocator garbage", 2, "--allocator: invalid choice"),
    # the benchmarks
    ("bench", 2, "required: BENCHMARK"),
    ("bench layers --families nope --device cpu", 2, "unknown families"),
    ("bench layers --groups 5 --device cpu", 2, "groups=5"),
    ("bench layers --groups x --device cpu", 2, "groups"),
    *_numbers("bench layers --device cpu", "--repeats", ("0", "-1", "x")),
    *_numbers("bench layers --device cpu", "--batch", ("0", "-1", "x")),
    *_numbers("bench layers --device cpu", "--size", ("0", "x")),
    *_numbers("bench layers --device cpu", "--threads", ("0", "x")),
    ("bench layers --device garbage", 2, "--device 'garbage' is not a device"),
    ("bench layers --dtype garbage", 2, "--dtype: invalid choice"),
    ("bench layers --clock garbage", 2, "--clock: invalid choice"),
    ("bench layers --kernels garbage", 2, "--kernels: invalid choice"),
    ("bench kanify --models zzz", 2, "unknown timm model(s) ['zzz']"),
    ("bench kanify --conv garbage", 2, "--conv: invalid choice"),
    *_numbers("bench kanify", "--batch", ("0", "-1", "x")),
    *_numbers("bench kanify", "--size", ("0", "x")),
    *_numbers("bench kanify", "--repeats", ("0", "x")),
    *_numbers("bench kanify", "--threads", ("0", "x")),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli-inputs")
    data = make_classification_folder(base / "data", train_per_class=2, val_per_class=1, size=16,
                                      patterns=("dots", "checkerboard"))
    seg = make_segmentation_folder(base / "seg", train=2, val=1, size=32, num_classes=3)
    model = kanzoo.save_pretrained(kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], num_classes=2), base / "model")
    segmodel = kanzoo.save_pretrained(kanzoo.create_model("u2kanet_small", width=0.125, num_classes=2),
                                      base / "segmodel")
    for name in ("image", "other"):
        (base / name).mkdir()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(base / name / "x.png")
    (base / "file").write_text("not a folder")
    hf = _hf_dataset(base / "hf")
    return dict(data=str(data), seg=str(seg), model=str(model), segmodel=str(segmodel), hf=str(hf),
                image=str(base / "image" / "x.png"), other=str(base / "other" / "x.png"), file=str(base / "file"))


def _hf_dataset(folder: Path) -> Path:
    """A single-split Hugging Face data set (an image and a ClassLabel column), written by save_to_disk."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {"image": [Image.new("RGB", (16, 16), (i * 60, 0, 0)) for i in range(4)], "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    return folder


def _tree(*roots: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, code, words", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_arguments_give_one_error_line_and_write_nothing(command, code, words, inputs, tmp_path, monkeypatch,
                                                              capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = shlex.split(command.format(**inputs, tmp=work, out=work / "run"))
    before = _tree(work, Path(inputs["data"]).parent)
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert words in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _tree(work, Path(inputs["data"]).parent) == before


@pytest.mark.parametrize("offline", [True, False])
def test_weights_that_cannot_be_fetched_are_one_line(offline, inputs, local_hub, hf_cache, tmp_path, monkeypatch,
                                                     capsys) -> None:
    """Offline with an empty cache (a failure while running: 1) and a repository that does not exist (2)."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    if offline:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = ["predict", "vggkan_11" if offline else "hf-hub:nobody/nothing", inputs["image"]]
    assert main(argv) == (1 if offline else 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert ("kanzoo download vggkan_11" if offline else "'nobody/nothing' not found") in err
    assert not list(tmp_path.iterdir())
