"""``scan.stages``: the networks of one stage (generators and discriminator)."""

from .discriminator import PatchDiscriminator
from .mobile import InvertedResidual, MobileGenerator, SeparableConv
from .resnet import RefinementGenerator, ResnetBlock, ResnetGenerator, init_weights, load_cyclegan_generator

__all__ = [
    "InvertedResidual",
    "MobileGenerator",
    "PatchDiscriminator",
    "RefinementGenerator",
    "ResnetBlock",
    "ResnetGenerator",
    "SeparableConv",
    "init_weights",
    "load_cyclegan_generator",
]
