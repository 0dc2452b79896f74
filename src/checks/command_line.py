"""The command line, checked before Hydra composes the config from it, where Hydra would answer what it cannot
use with a traceback (its own composition fails before any code of this program runs): a rerun of a directory
without a record (`check_rerun_argument()`), and overrides that delete a part of the config's schema."""

import sys

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.exits import exit_on_user_error
from src.records.hydra_record import check_rerun_argument

__all__ = ["check_command_line"]

SCHEMA = "config_schema"  # the name under which register_configs() stores the schema, conf/config.yaml's first default
HOW_TO_LIST = "`python main.py --help` lists them"


def check_command_line(arguments: list[str] | None = None) -> None:
    """Refuse, with one line, `arguments` (by default the command line's) that Hydra would end in a traceback."""
    arguments = sys.argv[1:] if arguments is None else arguments
    check_rerun_argument(arguments)
    with exit_on_user_error():
        for argument in arguments:
            _refuse_deleting_the_schema(argument)


def _refuse_deleting_the_schema(argument: str) -> None:
    """Every run needs each part of the schema, `Config`: `~opt` would train with the defaults of `opt` and
    record none, and `~model` leaves the config group without an option, where Hydra fails; so does `GROUP=null`
    for any config group (`model=null`, `hydra/launcher=null`)."""
    if argument.startswith("-"):  # Hydra's flags, such as --multirun
        return
    key, equals, value = argument.partition("=")
    name = key.lstrip("+~")
    store = ConfigStore.instance()
    schema = store.load(f"{SCHEMA}.yaml").node
    group = name in store.list("")
    if key.startswith("~") and name in schema.keys():  # noqa: SIM118 (`in schema` is false for dm, model: no default)
        if group:
            instead = f"choose another with {name}=NAME ({HOW_TO_LIST})"
        elif isinstance(schema[name], DictConfig):
            instead = f"change its settings instead ({name}.KEY=VALUE)"
        else:
            instead = f"set it instead ({name}=VALUE)"
        raise UserError(f"{argument} deletes {name}, which every run needs: {instead}.")
    # A top-level setting (`seed=null`) is Hydra's to refuse; anything else without dots names a config group.
    if equals and value.strip() == "null" and "." not in name and (group or name not in schema.keys()):  # noqa: SIM118
        raise UserError(
            f"{argument}: a config group takes the name of one of its options, not null: choose one "
            f"({name}=NAME; {HOW_TO_LIST}), or leave it out."
        )
