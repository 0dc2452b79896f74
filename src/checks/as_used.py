"""The config as it will be used, before any job has started: Hydra sets some values of its part for each job
(`hydra.job.num`, `hydra.runtime.output_dir`), and `${hydra:...}` reads Hydra's part of the running job. What
is checked before the jobs (credentials, values that cannot be resolved) is checked with stand-ins for them."""

from __future__ import annotations

import copy
from collections.abc import Generator, Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, FloatNode, IntegerNode, ListConfig, Node, OmegaConf, flag_override
from omegaconf.errors import OmegaConfBaseException

__all__ = ["as_used", "child", "holds_settings", "keys"]


@contextmanager
def as_used(config: DictConfig) -> Generator[DictConfig]:
    """A copy of `config` in which the values that Hydra sets for each job (`hydra.job.num`,
    `hydra.runtime.output_dir`) stand as 0, and which `${hydra:...}` reads: Hydra's own part resolves with it
    before any job has started. A stand-in holds no secret: a value that resolves to a secret with it always
    would."""
    used = copy.deepcopy(config)
    for node, key in _missing(used):
        number = isinstance(child(node, key), IntegerNode | FloatNode)
        with flag_override(node, ["readonly", "struct"], [False, False]), suppress(OmegaConfBaseException):
            node[key] = 0 if number else "0"  # pyright: ignore[reportArgumentType] (str keys of a DictConfig, int ones of a ListConfig)
    if "hydra" not in used:
        yield used
        return
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(used)
    try:
        yield used
    finally:
        hydra_config.cfg = previous


def _missing(node: DictConfig | ListConfig) -> Iterator[tuple[DictConfig | ListConfig, Any]]:
    """Every value still to be given (`???`) in `node`, as (its parent, its key)."""
    for key in keys(node):
        if holds_settings(node, key):
            yield from _missing(cast(DictConfig | ListConfig, child(node, key)))
        elif OmegaConf.is_missing(node, key):
            yield node, key


def keys(node: DictConfig | ListConfig) -> list[Any]:
    """The keys of a node as it holds them (a dictionary such as `dm.label_map` has int keys), or its indices."""
    return list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))


def child(node: DictConfig | ListConfig, key: Any) -> Node:
    """The node `node[key]` itself, unresolved (reading `node[key]` resolves it)."""
    return cast(Node, node._get_node(key))  # pyright: ignore[reportPrivateUsage, reportArgumentType]


def holds_settings(node: DictConfig | ListConfig, key: Any) -> bool:
    """Whether `node[key]` holds further settings (not an interpolation, nor null or `???`)."""
    value = child(node, key)
    return isinstance(value, DictConfig | ListConfig) and not (
        value._is_interpolation() or value._is_missing() or value._is_none()  # pyright: ignore[reportPrivateUsage]
    )
