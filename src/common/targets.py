"""What a config node instantiates: the class that its `_target_` names, known by the class itself, not by
its spelling."""

import sys

from omegaconf import DictConfig

__all__ = ["instantiates"]


def instantiates(node: DictConfig, cls: type) -> bool:
    """Whether Hydra makes a `cls` (or an instance of a subclass) of the config `node`. Its `_target_` is looked
    up among the modules already imported (Hydra imports its plugins, our sweeper among them, as it starts): a
    config's word never imports anything."""
    module, _, name = str(node.get("_target_", "")).rpartition(".")
    target = getattr(sys.modules.get(module), name, None)
    return isinstance(target, type) and issubclass(target, cls)
