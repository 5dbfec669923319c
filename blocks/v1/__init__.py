"""BiSeNet V1 components: spatial path, context-path backbones, ARM, U-shape.

The assembled network reuses ``blocks.model.TwoBranchSegNet`` (spatial path as its
``detail`` branch, context path as its ``semantic`` branch, aux heads as its ``boosters``)
so that V1 and V2 share one output convention and one parameter-count rule.
"""

from blocks.backbones import BasicBlock, ResNet18
from blocks.v1.backbones import SeparableConvBN, Xception39, XceptionBlock
from blocks.v1.context import AttentionRefinement, ContextPath, GlobalContext
from blocks.v1.spatial import SpatialPath

__all__ = [
    "AttentionRefinement",
    "BasicBlock",
    "ContextPath",
    "GlobalContext",
    "ResNet18",
    "SeparableConvBN",
    "SpatialPath",
    "Xception39",
    "XceptionBlock",
]
