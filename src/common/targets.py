"""What a config node instantiates: the class that its `_target_` names, known by the class itself, not by
its spelling; and which code a config may name at all."""

import importlib
import sys

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from src.common.errors import UserError

__all__ = ["EXECUTION_WHITELIST", "callback_targets", "check_target", "imported_class", "instantiates", "whitelisted"]

# The only code that a config's `_target_` may name for Hydra to create: this program's (the callbacks in
# conf/config.yaml). main.py gives it to Hydra; a config from elsewhere cannot make Hydra import anything else.
EXECUTION_WHITELIST = ("src.*",)


def instantiates(node: DictConfig, cls: type) -> bool:
    """Whether Hydra makes a `cls` (or an instance of a subclass) of the config `node`. Its `_target_` is looked
    up among the modules already imported (Hydra imports its plugins, our sweeper among them, as it starts): a
    config's word never imports anything."""
    module, _, name = str(node.get("_target_", "")).rpartition(".")
    target = getattr(sys.modules.get(module), name, None)
    return isinstance(target, type) and issubclass(target, cls)


def check_target(node: DictConfig, key: str, cls: type, group: str) -> None:
    """Refuse a config `node` (the setting `key`) that would not make a `cls`, before Hydra tries to (and fails
    with a traceback); `group`: the config group whose options make one."""
    from hydra.core.global_hydra import GlobalHydra

    if not instantiates(node, cls):
        loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
        options = f" ({', '.join(loader.get_group_options(group))})" if loader is not None else ""
        raise UserError(
            f"{key}._target_={node.get('_target_')} is not a {cls.__name__} that this program knows: choose one "
            f"with {group}=NAME{options}."
        )


def whitelisted(target: str) -> bool:
    """Whether Hydra's execution whitelist (EXECUTION_WHITELIST) lets a config name `target`: `package.*`
    allows what is in the package, any other entry only itself."""
    return any(
        target.startswith(pattern.removesuffix("*")) if pattern.endswith(".*") else target == pattern
        for pattern in EXECUTION_WHITELIST
    )


def callback_targets(*, _root_: DictConfig) -> dict[str, str]:
    """The resolver `${callback_targets:}`: the `_target_` of each of Hydra's callbacks, by its name in
    `hydra.callbacks` ("" where it has none, or none that resolves)."""
    targets: dict[str, str] = {}
    for name, node in _root_.hydra.callbacks.items_ex(resolve=False):
        try:
            target = node.get("_target_") if isinstance(node, DictConfig) else None
        except OmegaConfBaseException:
            target = None
        targets[str(name)] = "" if target is None else str(target)
    return targets


def imported_class(target: str) -> type | None:
    """The class that `target` names, imported: only for code that the execution whitelist trusts."""
    assert whitelisted(target)
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None
