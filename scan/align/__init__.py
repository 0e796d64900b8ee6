"""``scan.align``: the face front end, one module per step of a portrait.

    faces = detect_faces(photo, backend="auto", faces="all")        # landmarks.py: find faces
    aligned = cut_faces(photo, faces, size=256, template="ffhq")    # crop.py: cut them out
    blend = get_blend("square")(photo, translated, aligned[0])      # paste.py: what each face gives
    photo = paste_back(photo, crops, matrices, masks)               # paste.py: back into the photo

``align_faces`` does the first two at once; ``FaceTracker`` (tracking.py, with the one-euro filter of
smoothing.py) replaces detection in a video. Blend kinds are registered with ``register_blend``.
"""

from scan.align.crop import (
    TEMPLATES,
    AlignedFace,
    align_faces,
    cut_faces,
    fade_padding,
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
    FACE_MODES,
    MAX_DETECT_SIDE,
    AlignmentError,
    DlibBackend,
    Face,
    FanBackend,
    NoFaceError,
    SerialBackend,
    choose_faces,
    detect_faces,
    faces_from_landmarks,
    fan_weights_cached,
    get_backend,
    image_to_array,
)
from scan.align.paste import (
    Blend,
    BlendKind,
    UnknownBlendError,
    blend_kinds,
    footprint_box,
    get_blend,
    landmark_hull_mask,
    paste_back,
    register_blend,
    rounded_square_mask,
)

__all__ = [
    "BACKENDS",
    "FACE_MODES",
    "MAX_DETECT_SIDE",
    "TEMPLATES",
    "AlignedFace",
    "AlignmentError",
    "Blend",
    "BlendKind",
    "DlibBackend",
    "Face",
    "FanBackend",
    "NoFaceError",
    "SerialBackend",
    "UnknownBlendError",
    "align_faces",
    "blend_kinds",
    "choose_faces",
    "cut_faces",
    "detect_faces",
    "faces_from_landmarks",
    "fade_padding",
    "fan_weights_cached",
    "footprint_box",
    "ffhq_quad",
    "get_backend",
    "get_blend",
    "image_to_array",
    "invert_affine",
    "landmark_hull_mask",
    "paste_back",
    "portrait_quad",
    "quad_to_matrix",
    "register_blend",
    "rounded_square_mask",
    "template_quad",
    "warp_from_crops",
    "warp_to_crops",
]
