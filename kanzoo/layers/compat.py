"""Map Torch-Conv-KAN Gram layer state dicts (KAGNConvNDLayer, BottleNeckKAGNConvNDLayer) onto kanzoo layers.

The original keeps one base conv, one polynomial weight slice and one norm per group, and lays its
basis out degree-major (``k * C_g + c``). kanzoo keeps one fused weight, channel-major
(``c * (K + 1) + k``, the base branch at ``k = 0``), and one norm over all channels.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

_GROUP_KEY = re.compile(r"^(base_conv|layer_norm|inner_proj|out_proj)\.(\d+)\.(.+)$")


def _group_slices(state: Mapping[str, torch.Tensor], prefix: str, used: set[str]) -> dict[str, list[torch.Tensor]]:
    """Collect ``module.g.name`` entries into ``{module.name: [group 0, group 1, ...]}``."""
    found: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        match = _GROUP_KEY.match(key[len(prefix):])
        if match:
            module, group, name = match.groups()
            found.setdefault(f"{module}.{name}", {})[int(group)] = value
            used.add(key)
    return {name: [groups[g] for g in sorted(groups)] for name, groups in found.items()}


def _fused_weight(poly: torch.Tensor, num_bases: int, base: torch.Tensor | None) -> torch.Tensor:
    """(G, O_g, K * C_g, *k) degree-major [+ base (O, C_g, *k)] -> kanzoo's channel-major (O, C_g * K', *k)."""
    groups, out_g, expanded, *kernel = poly.shape
    out, per_group = groups * out_g, expanded // num_bases
    weight = poly.reshape(out, num_bases, per_group, *kernel).transpose(1, 2)
    if base is not None:
        weight = torch.cat([base.reshape(out, per_group, 1, *kernel), weight], dim=2)
    return weight.reshape(out, -1, *kernel).contiguous()


def convert_tck_kagn_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "",
                                used: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Convert one Torch-Conv-KAN Gram (or bottleneck Gram) layer's state dict to kanzoo's keys.

    ``prefix`` selects the layer inside a larger state dict (e.g. ``'features.0.'``). Keys consumed
    are added to ``used`` so that a caller converting a whole network can check nothing is left.
    The result targets :class:`~kanzoo.layers.KAGNConv2d` (or its bottleneck variant) built with
    ``bias=False`` and the matching norm.
    """
    used = set() if used is None else used
    poly_key, beta_key = prefix + "poly_weights", prefix + "beta_weights"
    if poly_key not in state or beta_key not in state:
        raise KeyError(f"no Torch-Conv-KAN Gram layer at prefix {prefix!r}: expected {poly_key!r} and {beta_key!r}")
    poly, beta = state[poly_key], state[beta_key]
    used.update({poly_key, beta_key})
    groups = _group_slices(state, prefix, used)
    base = torch.cat(groups.pop("base_conv.weight"), dim=0)
    out: dict[str, torch.Tensor] = {}
    if "inner_proj.weight" in groups:
        out["inner_proj.weight"] = torch.cat(groups.pop("inner_proj.weight"), dim=0)
        out["out_proj.weight"] = torch.cat(groups.pop("out_proj.weight"), dim=0)
        out["base_conv.weight"] = base
        out["kan.weight"] = _fused_weight(poly, beta.numel(), None)
        out["kan.beta_weights"] = beta
    else:
        out["weight"] = _fused_weight(poly, beta.numel(), base)
        out["beta_weights"] = beta
    for name, slices in groups.items():
        module, _, param = name.partition(".")
        if module != "layer_norm":
            raise KeyError(f"unexpected Torch-Conv-KAN key {prefix}{name}")
        if param == "num_batches_tracked":
            out["norm." + param] = slices[0]
        else:
            out["norm." + param] = torch.cat(slices, dim=0)
    return out
