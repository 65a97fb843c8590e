"""Draw the README's figure of the bundled models on images they never trained on.

For each model, the first images its card lists as held out from training
(``training.validation_images``) or, for a model trained on every image after
cross-validation, as left out of its training (``training.excluded``: the
glomeruli model's sample-slide tiles): the image, the expert mask (green)
and the model's prediction through ``slide_unet.segment`` (magenta), side
by side, each row titled with its Dice. Run from the repository root, next to ``../shared/data``::

    python scripts/model_figure.py            # writes docs/models.png

"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

#: model -> (images folder, masks folder, pixel size of the images or None)
SOURCES = {
    "glomeruli": ("glomeruli/bueno_pas/images", "glomeruli/bueno_pas/masks", 0.5),
    "nuclei": ("nuclei/dsb2018/images", "nuclei/dsb2018/masks", None),
}
PANEL = 256
GREEN, MAGENTA = (40, 220, 60), (235, 40, 235)


def panel(
    image: np.ndarray, mask: np.ndarray | None = None, colour: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """The image shrunk to the panel, with ``mask`` tinted and outlined in ``colour``."""
    shown = np.asarray(Image.fromarray(image).resize((PANEL, PANEL), Image.Resampling.LANCZOS))
    if mask is None:
        return Image.fromarray(shown)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((PANEL, PANEL))
    inside = np.asarray(small) > 127
    edge = inside & ~ndimage.binary_erosion(inside, iterations=2)
    out = shown.astype(np.float32)
    out[inside] = 0.7 * out[inside] + 0.3 * np.array(colour)
    out[edge] = colour
    return Image.fromarray(out.astype(np.uint8))


def rows_for(model_name: str, count: int) -> list[tuple[str, list[Image.Image]]]:
    import slide_unet
    from slide_unet.core.training.image_pairs import find_pairs, read_pair

    images, masks, mpp = SOURCES[model_name]
    model = slide_unet.load_model(model_name)
    training = model.card.training
    held = list(training.get("validation_images") or []) + list(training.get("excluded") or [])
    if not held:
        raise SystemExit(f"the {model_name} card lists no image it never trained on")
    pairs = {p.stem: p for p in find_pairs(DATA / images, DATA / masks)[0]}
    rows = []
    for stem in held[:count]:
        image, truth, file_mpp = read_pair(pairs[stem])
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
        pred = slide_unet.segment(image, model, mpp=file_mpp or mpp, device="cpu")
        score = slide_unet.dice(pred, truth)
        title = f"{model_name} · never trained on {stem[:12]} · Dice {score:.3f}"
        rows.append(
            (
                title,
                [
                    panel(rgb),
                    panel(rgb, truth, GREEN),
                    panel(rgb, pred, MAGENTA),
                ],
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=REPO / "docs" / "models.png")
    parser.add_argument("--per-model", type=int, default=4, help="rows per model")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: the figure needs the shared data")
    rows = [r for name in SOURCES for r in rows_for(name, args.per_model)]
    title_h, header_h, gap = 18, 22, 6
    width = 3 * PANEL + 4 * gap
    height = header_h + len(rows) * (title_h + PANEL + gap) + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, label in enumerate(("image", "expert mask (green)", "prediction (magenta)")):
        draw.text((gap + i * (PANEL + gap) + 4, 5), label, fill="black")
    y = header_h
    for title, panels in rows:
        draw.text((gap + 4, y + 3), title, fill="black")
        y += title_h
        for i, p in enumerate(panels):
            sheet.paste(p, (gap + i * (PANEL + gap), y))
        y += PANEL + gap
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
