"""The README's picture: the app's two public-domain example photos side by side, as `ferkit.draw`
labels them with the bundled default model.

    .venv/bin/python -m bench.tools.readme_picture
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import REPO
from ferkit import Predictor, draw
from ferkit.images import load_image

HEIGHT = 360


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "example.jpg")
    args = parser.parse_args()
    examples = resources.files("ferkit.app") / "examples"
    photos = []
    for name in ("astronaut.jpg", "grace-hopper.jpg"):
        rgb = load_image(Path(str(examples / name)))
        width = round(rgb.shape[1] * HEIGHT / rgb.shape[0])
        photos.append(np.asarray(Image.fromarray(rgb).resize((width, HEIGHT), Image.LANCZOS)))
    joined = np.concatenate(photos, axis=1)
    faces = Predictor().predict(joined)
    for face in faces:
        print(face)
    Image.fromarray(draw(joined, faces)).save(args.out, quality=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
