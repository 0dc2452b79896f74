"""The schema of the whole configuration, `Config`, and its registration in Hydra's ConfigStore."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from src.common.errors import UserError
from src.common.targets import callback_targets
from src.data import DataModule, check_seed
from src.datasets.celeba import CelebADataModule
from src.datasets.cmnist import CMNISTDataModule
from src.model import FcnFactory, ModelFactory, SimpleCNNFactory
from src.optimisation import OptimisationCfg
from src.optuna_sweeper.sweeper import register_sweeper
from src.wandb_logging import WandbCfg

__all__ = ["Config", "register_configs"]


@dataclass(eq=False, kw_only=True)
class Config:
    """The schema of the whole configuration: Hydra checks every value and override against it."""

    # MISSING: chosen by the `defaults` list in conf/config.yaml, or on the command line.
    dm: DataModule = MISSING
    model: ModelFactory = MISSING
    opt: OptimisationCfg = field(default_factory=OptimisationCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    seed: int = 42
    gpu: int = 0  # CUDA device index; -1 for the CPU
    threads: int | None = None  # PyTorch's CPU threads; None: this process's share of the cores (`ThreadBudget`)

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        if self.gpu < -1:
            raise UserError(f"gpu={self.gpu} is not a device: use a CUDA device index, or -1 for the CPU.")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads={self.threads} must be 1 or more, or null for this process's share of the cores.")


def register_configs() -> None:
    """Put the config dataclasses in Hydra's ConfigStore, where YAML files and overrides find them."""
    cs = ConfigStore.instance()
    # The schema: conf/config.yaml lists it first in its defaults, so YAML values are checked against it.
    cs.store(name="config_schema", node=Config)
    # Options of a config group: `dm=celeba` on the command line selects the `CelebADataModule` node.
    cs.store(group="dm", name="cmnist", node=CMNISTDataModule)
    cs.store(group="dm", name="celeba", node=CelebADataModule)
    cs.store(group="model", name="fcn", node=FcnFactory)
    cs.store(group="model", name="cnn", node=SimpleCNNFactory)
    # A library registers its own configs: our Optuna sweeper, `hydra/sweeper/resumable_optuna`.
    register_sweeper()
    # `${callback_targets:}` in conf/config.yaml: what Hydra's callbacks name, for the one that checks them.
    OmegaConf.register_resolver("callback_targets", callback_targets, replace=True)
