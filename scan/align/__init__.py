"""``scan.align``: the face front end: landmarks, FFHQ / portrait crops, paste-back.

    faces = align_faces(photo, size=256, template="ffhq", backend="auto")   # crops + matrices
    photo = paste_back(photo, translated_crops, matrices, masks)          # back into the photo
"""

from scan.align.align import MAX_DETECT_SIDE, AlignedFace, align_faces, detect_faces, image_to_array
from scan.align.crop import (
    TEMPLATES,
    ffhq_quad,
    invert_affine,
    portrait_quad,
    quad_to_matrix,
    template_quad,
    warp_from_crops,
    warp_to_crops,
)
from scan.align.landmarks import (
    BACKENDS,
    AlignmentError,
    DlibBackend,
    Face,
    FanBackend,
    NoFaceError,
    choose_faces,
    fan_weights_cached,
    get_backend,
)
from scan.align.paste import MASKS, footprint_box, landmark_hull_mask, paste_back, rounded_square_mask

__all__ = [
    "BACKENDS",
    "MASKS",
    "MAX_DETECT_SIDE",
    "TEMPLATES",
    "AlignedFace",
    "AlignmentError",
    "DlibBackend",
    "Face",
    "FanBackend",
    "NoFaceError",
    "align_faces",
    "choose_faces",
    "detect_faces",
    "fan_weights_cached",
    "footprint_box",
    "ffhq_quad",
    "get_backend",
    "image_to_array",
    "invert_affine",
    "landmark_hull_mask",
    "paste_back",
    "portrait_quad",
    "quad_to_matrix",
    "rounded_square_mask",
    "template_quad",
    "warp_from_crops",
    "warp_to_crops",
]
