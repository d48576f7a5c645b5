"""Reading an image file the one way the project does: training, validation, detection and conversion alike."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def read_image(path: str) -> Optional[np.ndarray]:
    """BGR uint8 ``(H, W, 3)`` or None when the file cannot be read or decoded (works with non-ASCII paths).

    OpenCV applies the EXIF orientation, so a phone photo comes out the way it is shown; grayscale, 16-bit and
    alpha images come out as 8-bit BGR."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if raw.size == 0:
        return None
    return cv2.imdecode(raw, cv2.IMREAD_COLOR)
