"""The inspection report: ``summary.csv`` (one row per KAN conv), one PNG per layer, and ``report.md`` showing both.

Each layer's picture is a grid of its strongest edges (largest standard deviation over the observed inputs):
the learned function ``phi`` over its input channel's observed range (0.5th to 99.5th percentile), its best
linear fit dashed, and the histogram of that channel's inputs underneath; a grid family's ``grid_range`` is
marked with dotted lines.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_write
from .functions import edge_function
from .statistics import LayerAnalysis, LayerStatistics, analyze, collect_statistics

__all__ = ["SUMMARY_COLUMNS", "inspect_model", "plot_layer", "write_report"]

SUMMARY_COLUMNS = ("layer", "family", "in_channels", "out_channels", "groups", "kernel_size", "num_bases", "params",
                   "nonlinearity", "outside_domain_fraction", "input_p01", "input_p50", "input_p99", "input_min",
                   "input_max", "inputs_seen", "plot")
_GRID_FAMILIES = ("kan", "fastkan", "relukan")


def _observed_range(values: torch.Tensor) -> tuple[float, float]:
    lo, hi = (float(v) for v in torch.quantile(values.double(), torch.tensor([0.005, 0.995], dtype=torch.float64)))
    if hi - lo < 1e-6:
        return lo - 1.0, hi + 1.0
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def plot_layer(analysis: LayerAnalysis, stats: LayerStatistics, path: str | os.PathLike[str], *,
               columns: int = 4) -> Path:
    """Draw the strongest edges of one layer (see the module doc) into the PNG ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    layer, edges = stats.layer, analysis.strongest
    columns = max(1, min(columns, len(edges)))
    rows = max(1, math.ceil(len(edges) / columns))
    figure = Figure(figsize=(3.2 * columns, 2.9 * rows + 0.6), dpi=90)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, columns, hspace=0.45, wspace=0.3, left=0.06, right=0.98,
                               bottom=0.5 / (2.9 * rows + 0.6), top=1 - 0.9 / (2.9 * rows + 0.6))
    domain = layer.grid_range if layer.family in _GRID_FAMILIES else None
    for index, edge in enumerate(edges):
        row, column = divmod(index, columns)
        cell = grid[row, column].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        top = figure.add_subplot(cell[0])
        bottom = figure.add_subplot(cell[1], sharex=top)
        observed = stats.samples[edge.channel]
        lo, hi = _observed_range(observed)
        t = torch.linspace(lo, hi, 200, dtype=torch.float64)
        phi = edge_function(layer, edge.output, edge.channel, edge.tap, t)
        seen = edge_function(layer, edge.output, edge.channel, edge.tap, observed.double())
        design = torch.stack([observed.double(), torch.ones_like(seen)], 1)
        slope, intercept = torch.linalg.lstsq(design, seen.unsqueeze(1)).solution.flatten().tolist()
        top.plot(t.numpy(), phi.numpy(), color="tab:blue", linewidth=1.6)
        top.plot(t.numpy(), (slope * t + intercept).numpy(), color="tab:gray", linestyle="--", linewidth=1)
        top.set_title(f"out {edge.output} <- in {edge.channel} at {edge.tap}\nstd {edge.std:.3g}, "
                      f"nonlinearity {edge.nonlinearity:.2f}", fontsize=8)
        top.tick_params(labelsize=7, labelbottom=False)
        top.yaxis.set_major_locator(MaxNLocator(4))
        counts, bins = torch.histogram(observed.clamp(lo, hi).double(), bins=30, range=(lo, hi))
        bottom.stairs(counts.numpy(), bins.numpy(), fill=True, color="tab:orange")
        bottom.tick_params(labelsize=7)
        bottom.xaxis.set_major_locator(MaxNLocator(4))
        bottom.set_yticks([])
        for axis in (top, bottom) if domain else ():
            for bound in domain:
                if lo < bound < hi:
                    axis.axvline(bound, color="black", linestyle=":", linewidth=0.8)
    figure.suptitle(f"{analysis.name} ({analysis.family}, {analysis.in_channels}->{analysis.out_channels}, groups "
                    f"{analysis.groups}): nonlinearity {analysis.nonlinearity:.3f}, outside domain "
                    f"{analysis.outside_domain_fraction:.1%}", fontsize=10)
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _cell(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return value


def _model_nonlinearity(analyses: Sequence[LayerAnalysis]) -> float:
    total = sum(a.variance for a in analyses)
    return sum(a.nonlinearity * a.variance for a in analyses) / total if total > 0 else 0.0


def write_report(analyses: Sequence[LayerAnalysis], statistics: dict[str, LayerStatistics],
                 out: str | os.PathLike[str], *, title: str = "model", inputs: int | None = None,
                 progress: bool | None = False) -> Path:
    """Write ``summary.csv``, ``layers/NNN_<layer>.png`` and ``report.md`` into ``out``; returns the report's path."""
    out = Path(out)
    (out / "layers").mkdir(parents=True, exist_ok=True)
    plots = {}
    for index, analysis in enumerate(tqdm(analyses, desc="plots", leave=False,
                                          disable=None if progress is None else not progress)):
        relative = f"layers/{index:03d}_{analysis.name}.png"
        plot_layer(analysis, statistics[analysis.name], out / relative)
        plots[analysis.name] = relative
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for analysis in analyses:
        row = {**vars(analysis), "layer": analysis.name, "plot": plots[analysis.name]}
        writer.writerow([_cell(row[column]) for column in SUMMARY_COLUMNS])
    atomic_write(out / "summary.csv", lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))
    seen = f" over {inputs} inputs" if inputs is not None else ""
    lines = [f"# Inside {title}", "",
             f"{len(analyses)} KAN convolutions, statistics{seen} (eval mode). Nonlinearity: the share of the edges' "
             "variance over the observed inputs that their best linear fits do not explain (0: a plain conv); "
             f"model-wide {_model_nonlinearity(analyses):.3f}. Outside domain: the share of inputs outside the "
             "family's useful domain. Data: [summary.csv](summary.csv).", "",
             "| layer | family | in | out | groups | nonlinearity | outside domain | input p01 | input p99 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| [{a.name}](#{a.name.replace('.', '')}) | {a.family} | {a.in_channels} | {a.out_channels} | "
              f"{a.groups} | {a.nonlinearity:.3f} | {a.outside_domain_fraction:.1%} | {a.input_p01:.3g} | "
              f"{a.input_p99:.3g} |" for a in analyses]
    for analysis in analyses:
        lines += ["", f"## {analysis.name}", "", f"![{analysis.name}]({plots[analysis.name]})"]
    atomic_write(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return out / "report.md"


def inspect_model(model: nn.Module, batches: Iterable[torch.Tensor], out: str | os.PathLike[str], *,
                  layers: str | None = None, top: int = 16, samples_per_channel: int = 1024,
                  title: str = "model", total: int | None = None, progress: bool | None = False
                  ) -> list[LayerAnalysis]:
    """Collect the statistics of ``model``'s KAN convs (names matching ``layers``) over ``batches``, analyse them and
    write the report into ``out`` (:func:`write_report`); returns the analyses in module order."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    seen = 0

    def counted() -> Iterable[torch.Tensor]:
        nonlocal seen
        for batch in batches:
            seen += len(batch)
            yield batch

    statistics = collect_statistics(model, counted(), layers=layers, samples_per_channel=samples_per_channel,
                                    progress=progress, total=total)
    analyses = [analyze(stats, top) for stats in statistics.values()]
    write_report(analyses, statistics, out, title=title, inputs=seen, progress=progress)
    return analyses
