"""CelebA: face images, with one of the 40 binary attributes as the label and another as subgroup."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from typing_extensions import override

from src.data import Data, DataModule
from src.errors import UserError

__all__ = ["CelebADataModule", "CelebAttr"]


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


@dataclass(eq=False, kw_only=True)
class CelebADataModule(DataModule):
    """CelebA for fairness experiments: predict `superclass`, measure per `subclass` group."""

    default_res: int = 128
    superclass: CelebAttr = CelebAttr.SMILING  # the attribute to predict
    subclass: CelebAttr = CelebAttr.MALE  # the attribute that defines the subgroups
    split_seed: int | None = None  # None: the official partition; a number: a random re-split

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.superclass is self.subclass:
            raise UserError(f"dm.superclass and dm.subclass are both {self.subclass.name}: choose two attributes.")

    @override
    def build(self, *, seed: int) -> Data:
        raise UserError("The CelebA data module cannot load images yet; use dm=cmnist for now.")
