"""Look inside KAN convolutions: their learned functions, what they see on data, sparsity, and pruning.

- ``functions``: ``edge_functions(layer, t)``, the learned ``phi[o, c, i](t)`` of a layer, and its views;
- ``statistics``: what each layer sees on real data (forward hooks), its nonlinearity and strongest edges;
- ``report``: ``summary.csv``, one picture per layer and ``report.md``;
- ``regularization``: the KAN paper's L1 and entropy regularisation of the basis weights;
- ``prune``: structured pruning into smaller layers (:mod:`kanzoo.models.pruned` records it);
- ``cost``: parameters, GFLOPs and measured forward time.

Beside the models floor: it imports ``kanzoo.layers``, ``kanzoo.models`` and ``kanzoo.atomic`` only.
"""

from .cost import ModelCost, count_gflops, count_parameters, forward_time, model_cost
from .functions import channel_functions, edge_function, edge_functions, kan_layers, responses
from .prune import LayerPlan, Pruner, prune_model
from .regularization import KANRegularizer, kan_regularization
from .report import SUMMARY_COLUMNS, inspect_model, plot_layer, write_report
from .statistics import (DOMAINS, Edge, LayerAnalysis, LayerStatistics, analyze, collect_statistics,
                         inside_domain, register_domain)

__all__ = [
    "DOMAINS", "Edge", "LayerAnalysis", "LayerPlan", "LayerStatistics", "ModelCost", "Pruner", "KANRegularizer",
    "SUMMARY_COLUMNS", "analyze", "channel_functions", "collect_statistics", "count_gflops", "count_parameters",
    "edge_function", "edge_functions", "forward_time", "inside_domain", "inspect_model", "kan_layers",
    "kan_regularization", "model_cost", "plot_layer", "prune_model", "register_domain", "responses", "write_report",
]
