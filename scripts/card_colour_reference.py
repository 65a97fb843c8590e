"""Record the colour of a trained model's training tissue in its card (``colour_reference``).

``slide-unet train --match-colour`` records it as it trains; this adds it to a card trained
before the option existed, measured the same way (:func:`slide_unet.core.training.colour.
colour_reference` over the images its card lists as ``train_images``, resampled to its working
scale as training resamples them). The weights, and so their sha256, do not change, nor does
the card's ``command`` (``--match-colour`` while training could pick another epoch, since
validation matches colours too); the card's ``training.colour_reference_command`` records this
one::

    python scripts/card_colour_reference.py src/slide_unet/models/glomeruli.json \\
        --images ../shared/data/glomeruli/bueno_pas/images \\
        --masks ../shared/data/glomeruli/bueno_pas/masks
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def main() -> None:
    from slide_unet.core.atomic import write_text_atomic
    from slide_unet.core.model.card import ModelCard
    from slide_unet.core.training.colour import colour_reference
    from slide_unet.core.training.config import TrainingConfig
    from slide_unet.core.training.data import load_images
    from slide_unet.core.training.image_pairs import find_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--masks", type=Path, required=True)
    args = parser.parse_args()
    card = ModelCard.from_json(args.card)
    stems = set(card.training["train_images"])
    pairs = [p for p in find_pairs(args.images, args.masks)[0] if p.stem in stems]
    if {p.stem for p in pairs} != stems:
        raise SystemExit(f"missing training images: {sorted(stems - {p.stem for p in pairs})}")
    used = card.training["config"]
    config = TrainingConfig(
        name=card.name,
        working_mpp=used["working_mpp"],
        input_mpp=used["input_mpp"],
        validation_images=(),
    )
    images, _ = load_images(pairs, config, print)
    reference = colour_reference(images, config.working_mpp or config.input_mpp)
    record = json.loads(args.card.read_text())
    record["colour_reference"] = reference
    # The weights' command stays as it was (it made them); this one made the reference.
    record["training"]["colour_reference_command"] = shlex.join(
        ["python", "scripts/card_colour_reference.py", *sys.argv[1:]]
    )
    ModelCard.from_dict(record)  # still a valid card
    write_text_atomic(args.card, json.dumps(record, indent=2) + "\n")
    print(f"{args.card}: colour_reference {reference}")


if __name__ == "__main__":
    main()
