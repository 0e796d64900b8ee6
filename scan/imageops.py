"""Where image conversions and pictures used to live, kept so that code importing them from here
still works: conversions and image files are in :mod:`scan.imageio`, grids, heatmaps and strips in
:mod:`scan.strips`. New code imports from those."""

from scan.imageio import as_model_input, model_to_pil, model_to_uint8, pil_to_model, pil_to_uint8, uint8_to_model
from scan.strips import heatmap, labelled_strip, make_grid

__all__ = [
    "as_model_input",
    "uint8_to_model", "model_to_uint8", "pil_to_uint8", "pil_to_model", "model_to_pil", "make_grid", "heatmap",
    "labelled_strip",
]
