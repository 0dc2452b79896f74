"""CelebA: face images, with one of the 40 binary attributes as the label and another as subgroup."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

from omegaconf.errors import OmegaConfBaseException
from typing_extensions import override

from src.common.errors import UserError
from src.data import Data, DataModule, Split, check_seed, hash_files

__all__ = ["CelebADataModule", "CelebAttr", "UnknownAttributeError"]

CELEBA_IMAGES = 202_599


class UnknownAttributeError(OmegaConfBaseException):
    """A name that is no CelebA attribute. An OmegaConf error, so that Hydra reports it as it reports
    any bad override: one message, no traceback."""


class CelebAttr(Enum):
    """The 40 attributes of CelebA, by the column names of `list_attr_celeba.txt`."""

    FIVE_O_CLOCK_SHADOW = "5_o_Clock_Shadow"
    ARCHED_EYEBROWS = "Arched_Eyebrows"
    ATTRACTIVE = "Attractive"
    BAGS_UNDER_EYES = "Bags_Under_Eyes"
    BALD = "Bald"
    BANGS = "Bangs"
    BIG_LIPS = "Big_Lips"
    BIG_NOSE = "Big_Nose"
    BLACK_HAIR = "Black_Hair"
    BLOND_HAIR = "Blond_Hair"
    BLURRY = "Blurry"
    BROWN_HAIR = "Brown_Hair"
    BUSHY_EYEBROWS = "Bushy_Eyebrows"
    CHUBBY = "Chubby"
    DOUBLE_CHIN = "Double_Chin"
    EYEGLASSES = "Eyeglasses"
    GOATEE = "Goatee"
    GRAY_HAIR = "Gray_Hair"
    HEAVY_MAKEUP = "Heavy_Makeup"
    HIGH_CHEEKBONES = "High_Cheekbones"
    MALE = "Male"
    MOUTH_SLIGHTLY_OPEN = "Mouth_Slightly_Open"
    MUSTACHE = "Mustache"
    NARROW_EYES = "Narrow_Eyes"
    NO_BEARD = "No_Beard"
    OVAL_FACE = "Oval_Face"
    PALE_SKIN = "Pale_Skin"
    POINTY_NOSE = "Pointy_Nose"
    RECEDING_HAIRLINE = "Receding_Hairline"
    ROSY_CHEEKS = "Rosy_Cheeks"
    SIDEBURNS = "Sideburns"
    SMILING = "Smiling"
    STRAIGHT_HAIR = "Straight_Hair"
    WAVY_HAIR = "Wavy_Hair"
    WEARING_EARRINGS = "Wearing_Earrings"
    WEARING_HAT = "Wearing_Hat"
    WEARING_LIPSTICK = "Wearing_Lipstick"
    WEARING_NECKLACE = "Wearing_Necklace"
    WEARING_NECKTIE = "Wearing_Necktie"
    YOUNG = "Young"
    BLOND = "Blond_Hair"  # an alias of BLOND_HAIR, the short name used in this project's examples

    @classmethod
    def _missing_(cls, value: object) -> NoReturn:
        # OmegaConf calls `CelebAttr(value)` when `value` is not a name; its own error lists all 41 names
        # but suggests none. Not a ValueError, which OmegaConf would replace by that list.
        names = list(cls.__members__)
        typed = str(value).upper()
        # A word of a name (BEARD: NO_BEARD; HAT: WEARING_HAT) is a better guess than a similar spelling.
        closest = [name for name in names if typed in name.split("_")] or difflib.get_close_matches(typed, names, n=1)
        hint = f" (did you mean {' or '.join(closest)}?)" if closest else ""
        raise UnknownAttributeError(f"{value!r} is not a CelebA attribute{hint}; choose one of {', '.join(names)}.")


@dataclass(eq=False, kw_only=True)
class CelebADataModule(DataModule):
    """CelebA for fairness experiments: predict `superclass`, measure per `subclass` group."""

    default_res: int = 64  # the aligned images are 178x218; `celeba_male_smiling_small` uses 32
    superclass: CelebAttr = CelebAttr.SMILING  # the attribute to predict
    subclass: CelebAttr = CelebAttr.MALE  # the attribute that defines the subgroups
    # None: the official partition; a number: a random re-split of the same sizes (identities then cross splits)
    split_seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.superclass is self.subclass:
            raise UserError(f"dm.superclass and dm.subclass are both {self.subclass.name}: choose two attributes.")
        if self.split_seed is not None:
            check_seed("dm.split_seed", self.split_seed)

    @override
    def memory_needed(self) -> int:
        # uint8 colour images, their 40 attributes and partition; CelebA's size unless the attribute file says
        from src.datasets.celeba_files import ATTR_FILE, FOLDER

        try:
            with (self.root / FOLDER / ATTR_FILE).open() as file:
                count = int(file.readline())
        except (OSError, ValueError):
            count = CELEBA_IMAGES
        return count * (3 * self.default_res**2 + 41)

    @override
    def build(self, *, seed: int) -> Data:
        """CelebA with labels `superclass` and groups `subclass`; the split depends on `split_seed`, not `seed`,
        so that runs with different seeds share it."""
        import torch

        from src.datasets.celeba_files import ATTR_FILE, FOLDER, PARTITION_FILE, load_celeba

        columns = [attribute.value for attribute in CelebAttr]  # iterating an Enum skips the alias BLOND
        celeba = load_celeba(self.root, res=self.default_res, download=self.download, attribute_names=columns)
        partition = celeba.partition
        if self.split_seed is not None:
            generator = torch.Generator().manual_seed(self.split_seed)
            partition = partition[torch.randperm(len(partition), generator=generator)]
        labels = celeba.attributes[:, columns.index(self.superclass.value)].long()
        groups = celeba.attributes[:, columns.index(self.subclass.value)].long()

        def split(index: int) -> Split:
            # An index list into the images of all splits, which stay in the memory-mapped cache: a boolean
            # mask (`celeba.images[members]`) would copy them into each process's memory.
            rows = (partition == index).nonzero().squeeze(1)
            return Split(images=celeba.images, rows=rows, labels=labels[rows], groups=groups[rows])

        return Data(
            train=split(0),
            val=split(1),
            test=split(2),
            num_classes=2,
            # Metric names such as val/acc_not_Male: no spaces or slashes, which W&B would show as nesting.
            group_names=[f"not_{self.subclass.value}", self.subclass.value],
            source="celeba",
            # The two text files name every image and its labels; hashing 200,000 images on every run would not pay.
            origin=hash_files(self.root / FOLDER / name for name in (ATTR_FILE, PARTITION_FILE)),
            prepared_fingerprint=celeba.fingerprint,
        )
