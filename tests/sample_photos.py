"""Photos several test files share, made from scikit-image's data (on the path through setup.cfg's
``pythonpath = tests``)."""

from PIL import Image, ImageOps
from skimage import data


def two_faces() -> Image.Image:
    """The astronaut's face twice, the second mirrored and smaller (``faces="all"`` finds both)."""
    face = Image.fromarray(data.astronaut()).crop((130, 10, 330, 250))
    photo = Image.new("RGB", (420, 260), (90, 120, 150))
    photo.paste(face, (0, 10))
    photo.paste(ImageOps.mirror(face).resize((170, 204)), (230, 40))
    return photo
