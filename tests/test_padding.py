"""Crops that reach past the photo: FFHQ's padding (reflect, then blur and fade toward the median
colour), so that the network never sees a mirrored second face."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from skimage import data

from scan.align import detect_faces, faces_from_landmarks
from scan.align.crop import cut_faces, fade_padding, warp_to_crops
from scan.imageio import pil_to_uint8


def _face_near_the_top() -> tuple[torch.Tensor, np.ndarray]:
    photo = data.astronaut()
    landmarks = detect_faces(photo, "dlib")[0].landmarks
    return pil_to_uint8(Image.fromarray(photo[90:])), landmarks - [0, 90]


def test_a_crop_inside_the_photo_is_left_as_it_was():
    photo = pil_to_uint8(Image.fromarray(data.astronaut()))
    face = detect_faces(data.astronaut(), "dlib")[0]
    (aligned,) = cut_faces(photo, [face], 64)
    assert torch.equal(aligned.crop, warp_to_crops(photo, aligned.matrix[None], 64)[0])


def test_past_the_edge_the_mirror_image_fades_to_a_flat_colour():
    photo, landmarks = _face_near_the_top()
    (aligned,) = cut_faces(photo, faces_from_landmarks([landmarks]), 64)
    mirrored = warp_to_crops(photo, aligned.matrix[None], 64)[0]
    source_y = np.linalg.inv(np.vstack([aligned.matrix, [0, 0, 1]]))[1] @ np.array([32, 0, 1])
    assert source_y < -10  # the crop's top row lies well above the photo
    top, bottom = slice(0, 6), slice(54, 64)
    # The mirrored rows were as busy as the face; faded, they are nearly flat, near the median.
    assert aligned.crop[:, top].std() < 0.5 * mirrored[:, top].std()
    median = aligned.crop.flatten(1).median(dim=1).values
    assert (aligned.crop[:, 0].mean(dim=1) - median).abs().max() < 0.25
    # Inside the photo, away from its edge, nothing changed.
    assert torch.equal(aligned.crop[:, bottom], mirrored[:, bottom])


def test_fade_padding_changes_only_the_crops_that_reach_past_the_photo():
    photo, landmarks = _face_near_the_top()
    full = pil_to_uint8(Image.fromarray(data.astronaut()))
    inside = detect_faces(data.astronaut(), "dlib")[0].landmarks
    from scan.align import ffhq_quad, quad_to_matrix

    matrices = np.stack([quad_to_matrix(ffhq_quad(landmarks), 32), quad_to_matrix(ffhq_quad(inside * 0.5 + 128), 32)])
    crops = warp_to_crops(photo, matrices, 32)
    faded = fade_padding(crops, matrices, *photo.shape[-2:])
    assert not torch.equal(faded[0], crops[0]) and torch.equal(faded[1], crops[1])
    assert fade_padding(crops[:0], matrices[:0], 10, 10).shape == (0, 3, 32, 32)
    assert full.dtype == torch.uint8
