"""The optimiser: built in its fastest implementation for the device, and the user's choice wins."""

import re

import pytest
import torch
from torch import nn

from src.common.errors import UserError
from src.optimisation import OptimisationCfg


@pytest.mark.parametrize("optimizer_cls", ["torch.optim.AdamW", "torch.optim.SGD", "torch.optim.Adagrad"])
def test_the_optimiser_is_fused_where_it_has_a_fused_implementation(optimizer_cls: str) -> None:
    optimizer = OptimisationCfg(optimizer_cls=optimizer_cls).build(nn.Linear(4, 2).parameters())
    assert optimizer.param_groups[0]["fused"] is True


def test_an_optimiser_without_a_fused_implementation_is_built_as_pytorch_chooses() -> None:
    optimizer = OptimisationCfg(optimizer_cls="torch.optim.RMSprop").build(nn.Linear(4, 2).parameters())
    assert "fused" not in optimizer.param_groups[0]
    assert optimizer.param_groups[0]["foreach"] is None  # PyTorch's choice: foreach on GPUs, else standard


@pytest.mark.parametrize("choice", [{"foreach": True}, {"fused": False}, {"foreach": False}])
def test_the_users_choice_of_implementation_wins(choice: dict[str, bool]) -> None:
    opt = OptimisationCfg(optimizer_kwargs=choice)
    group = opt.build(nn.Linear(4, 2).parameters()).param_groups[0]
    assert {key: group[key] for key in choice} == choice
    assert not group["fused"]


def test_settings_with_which_the_optimiser_cannot_step_are_refused_before_training() -> None:
    # `differentiable` excludes the fused implementation, and torch's standard one then fails at the first step
    # of training (an in-place update of a weight that requires its gradient).
    opt = OptimisationCfg(optimizer_kwargs={"differentiable": True})
    with pytest.raises(UserError, match=re.escape("torch.optim.AdamW cannot train with opt.lr=5e-05")):
        opt.build(nn.Linear(4, 2).parameters())


def test_a_fused_implementation_that_cannot_step_is_one_clear_error() -> None:
    opt = OptimisationCfg(optimizer_kwargs={"fused": True, "differentiable": True})
    with pytest.raises(UserError, match=re.escape("cannot be fused here (`fused` does not support `differentiable`)")):
        opt.build(nn.Linear(4, 2).parameters())


def test_a_saved_optimiser_continues_in_the_implementation_chosen_where_it_continues() -> None:
    # As a run saved on the CPU with fused Adagrad continues on a GPU, where Adagrad has no fused kernel.
    model = nn.Linear(4, 2)
    model(torch.ones(1, 4)).sum().backward()
    saved = torch.optim.Adagrad(model.parameters(), foreach=True)
    saved.step()  # pyright: ignore[reportUnknownMemberType]
    optimizer = OptimisationCfg(optimizer_cls="torch.optim.Adagrad").build(model.parameters())
    optimizer.load_state_dict(saved.state_dict())
    assert optimizer.param_groups[0]["fused"] is True
    assert optimizer.param_groups[0]["foreach"] is None
    optimizer.step()  # pyright: ignore[reportUnknownMemberType] (fused, on the state the foreach one saved)
    assert optimizer.state[model.weight]["sum"].shape == model.weight.shape
