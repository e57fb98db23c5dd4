"""The stored layout of the expansion: every way of making one agrees on shape and memory order."""

from __future__ import annotations

import pytest
import torch

from kanzoo.layers.execution.layout import (concat_responses, empty_expansion, from_stored, stack_responses,
                                            stored_order, write_responses)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_maker_agrees_on_the_layout(ndim: int, channels_last: bool) -> None:
    x = torch.randn(2, 3, *range(4, 4 + ndim))
    responses = [x * k for k in range(5)]
    stacked = stack_responses(responses[:1] + [torch.stack(responses[1:], 2)], ndim, torch.float32, channels_last)
    empty = empty_expansion(x, 5, torch.float32, channels_last)
    expected = concat_responses(responses, ndim)
    assert stacked.shape == empty.shape == expected.shape == (2, 3, 5, *x.shape[2:])
    assert stacked.stride() == empty.stride()
    torch.testing.assert_close(stacked, expected, rtol=0, atol=0)
    torch.testing.assert_close(write_responses(responses, empty), expected, rtol=0, atol=0)
    memory = sorted(range(stacked.dim()), key=lambda d: -stacked.stride(d))
    assert tuple(memory) == stored_order(ndim, channels_last)


def test_channels_last_expansion_flattens_to_a_channels_last_conv_input() -> None:
    x = torch.randn(2, 3, 4, 5)
    expansion = empty_expansion(x, 4, torch.float32, channels_last=True)
    assert expansion.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    stored = expansion.permute(stored_order(2, channels_last=True))
    assert stored.is_contiguous() and stored.shape == (2, 4, 5, 3, 4)
    assert from_stored(stored, channels_last=True).stride() == expansion.stride()
