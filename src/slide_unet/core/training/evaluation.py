"""Score a model on a folder of images against their expert masks.

:func:`evaluate` runs a model through the same engine as ``slide-unet segment``
(:func:`~slide_unet.core.inference.segment.segment`) on every image of a folder that has
a mask of the same file stem in another folder
(:func:`~slide_unet.core.training.image_pairs.find_pairs`), and scores each prediction
with :func:`~slide_unet.core.scoring.metrics.score`: Dice and IoU per image, and over
all images together the pooled Dice (every pixel of every image counted once:
a sliver of an object at an image's edge weighs as little as it is) and
object precision, recall and F1 (objects matched one to one at IoU >= 0.5).

Conventions
    Any non-zero mask pixel is foreground (RGB, 0/1, 0/255 and instance labels
    all work). The metrics are :mod:`slide_unet.core.scoring.metrics`'s: an image whose
    mask and prediction are both empty scores Dice 1 and IoU 1; an empty mask
    against a non-empty prediction (or the other way round) scores 0. IoU is
    ``D / (2 - D)`` of the image's Dice ``D`` (the identity
    :func:`~slide_unet.core.scoring.metrics.iou` documents), so each image is read
    once. The mean is the plain mean over images, each image counting once
    whatever its size.

Pixel size
    Each image's pixel size comes from its file (OME ``PhysicalSizeX``, TIFF
    resolution tags, Aperio ``MPP``), else the ``mpp`` argument, else the model
    card's ``default_input_mpp``, as in ``segment``; :attr:`Evaluation.mpp`
    records which, per image.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from slide_unet.core.devices import resolve_device
from slide_unet.core.errors import Cancel, Cancelled, InputError, ModelError, cancel_check
from slide_unet.core.inference.segment import MAX_IN_MEMORY_PIXELS, segment
from slide_unet.core.masks.io import check_same_shape, read_mask
from slide_unet.core.model.card import ModelCard
from slide_unet.core.scoring.metrics import Scores, score
from slide_unet.core.slide.slide import open_slide
from slide_unet.core.training.image_pairs import ImagePair, find_pairs, image_stem

__all__ = [
    "MPP_SOURCES",
    "Evaluation",
    "ObjectTotals",
    "PixelSize",
    "evaluate",
    "held_out_stems",
]

#: Where a pixel size came from, in order of precedence.
MPP_SOURCES = ("file", "argument", "model card", "unknown")

#: Predictions up to this many pixels are held in memory; bigger ones stream
#: to a temporary zarr store (deleted after scoring).
IN_MEMORY_PIXELS = MAX_IN_MEMORY_PIXELS

#: Key of a model card's ``training`` mapping that lists held-out image stems.
VALIDATION_KEY = "validation_images"


class PixelSize(NamedTuple):
    """The pixel size an image was segmented at, and where it came from.

    ``mpp`` is in µm per pixel (None when nothing gave one: the model then
    runs at the image's own scale); ``source`` is one of :data:`MPP_SOURCES`.
    """

    mpp: float | None
    source: str


@dataclass(frozen=True)
class ObjectTotals:
    """Pixel and object counts of predictions against truths, which add up over images.

    ``dice`` comes from the pixel counts, ``precision``, ``recall`` and ``f1``
    from the object counts (objects matched one to one at IoU >= 0.5; each is
    1 when neither side has objects, 0 when only one has).
    """

    intersection: int = 0
    pred_pixels: int = 0
    true_pixels: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @classmethod
    def of(cls, scores: Scores) -> ObjectTotals:
        """The counts of one image's :class:`~slide_unet.core.scoring.metrics.Scores`."""
        return cls(
            scores.intersection,
            scores.pred_pixels,
            scores.true_pixels,
            scores.true_positives,
            scores.false_positives,
            scores.false_negatives,
        )

    def __add__(self, other: ObjectTotals) -> ObjectTotals:
        return ObjectTotals(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )

    @property
    def dice(self) -> float:
        total = self.pred_pixels + self.true_pixels
        return 1.0 if total == 0 else 2.0 * self.intersection / total

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives, self)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives, self)

    @property
    def f1(self) -> float:
        both = 2 * self.true_positives + self.false_positives + self.false_negatives
        return _ratio(2 * self.true_positives, both, self)

    def as_dict(self) -> dict[str, Any]:
        """The counts and the scores from them, JSON-ready."""
        out: dict[str, Any] = dataclasses.asdict(self)
        out.update(dice=self.dice, precision=self.precision, recall=self.recall, f1=self.f1)
        return out


def _ratio(part: int, whole: int, totals: ObjectTotals) -> float:
    if whole:
        return part / whole
    # No object on one side: 1 when there is none on either, else 0.
    objects = totals.true_positives + totals.false_positives + totals.false_negatives
    return 1.0 if objects == 0 else 0.0


@dataclass(frozen=True)
class Evaluation:
    """The scores of one model on a folder of images.

    Attributes
    ----------
    mean_dice, mean_iou : float
        Mean over images of the per-image Dice and IoU.
    per_image : dict of str to float
        Dice of each image, by file stem (sorted by stem).
    per_image_iou : dict of str to float
        IoU of each image, by file stem.
    mpp : dict of str to PixelSize
        The pixel size each image was segmented at, and its source.
    pooled : ObjectTotals
        Pixel and object counts summed over every image: :attr:`pooled_dice`
        and the object precision, recall and F1 of the whole set.
    per_image_counts : dict of str to ObjectTotals
        The same counts for each image.
    model : str
        The model's name (from its card).
    seconds : float
        Wall time of the whole evaluation, model loading included.
    unpaired : tuple of str
        Stems of images in the folder that have no mask (not evaluated).
    """

    mean_dice: float
    per_image: dict[str, float]
    per_image_iou: dict[str, float]
    mpp: dict[str, PixelSize]
    model: str
    seconds: float
    mean_iou: float = 1.0
    unpaired: tuple[str, ...] = field(default=())
    pooled: ObjectTotals | None = None
    per_image_counts: dict[str, ObjectTotals] = field(default_factory=dict)

    @property
    def pooled_dice(self) -> float:
        """Dice of all images' pixels together (1 when no image has foreground)."""
        return 1.0 if self.pooled is None else self.pooled.dice

    @property
    def n_images(self) -> int:
        """How many images were scored."""
        return len(self.per_image)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``mean_dice``, ``per_image`` (stem -> Dice) and the rest."""
        return {
            "model": self.model,
            "mean_dice": self.mean_dice,
            "mean_iou": self.mean_iou,
            "n_images": self.n_images,
            "per_image": dict(self.per_image),
            "per_image_iou": dict(self.per_image_iou),
            "mpp": {s: {"mpp": p.mpp, "source": p.source} for s, p in self.mpp.items()},
            "unpaired": list(self.unpaired),
            "seconds": self.seconds,
            "pooled": None if self.pooled is None else self.pooled.as_dict(),
            "per_image_counts": {s: c.as_dict() for s, c in self.per_image_counts.items()},
        }


def _card_of(model: Any) -> ModelCard:
    card = model if isinstance(model, ModelCard) else getattr(model, "card", None)
    if card is None:
        raise ModelError(f"{type(model).__name__} has no model card (.card)")
    return card


def held_out_stems(model: Any) -> list[str] | None:
    """The image stems a model was validated on, as its card records them.

    The training command stores the stems of the images it kept out of
    training as a list of strings under ``card.training["validation_images"]``.

    Parameters
    ----------
    model : str, os.PathLike, torch.nn.Module or ModelCard
        A model name or file (loaded with
        :func:`~slide_unet.core.model.store.load_model`), a loaded model with
        its ``.card``, or a card.

    Returns
    -------
    list of str or None
        The stems in the card's order (possibly empty), or None when the card
        records none.

    Raises
    ------
    ModelError
        The model cannot be loaded, or the card's entry is not a list of strings.
    """
    if isinstance(model, (str, os.PathLike)):
        import warnings

        from slide_unet.core.errors import PlaceholderModelWarning
        from slide_unet.core.model.store import load_model

        with warnings.catch_warnings():  # only the card is wanted here
            warnings.simplefilter("ignore", PlaceholderModelWarning)
            model = load_model(model)
    card = _card_of(model)
    stems = card.training.get(VALIDATION_KEY)
    if stems is None:
        return None
    if not isinstance(stems, list) or not all(isinstance(s, str) and s for s in stems):
        raise ModelError(
            f"model {card.name!r}: training[{VALIDATION_KEY!r}] must be a list of image "
            f"stems (strings), got {stems!r}"
        )
    return list(stems)


def _select(pairs: list[ImagePair], unpaired: list[Path], stems: Iterable[str]) -> list[ImagePair]:
    if isinstance(stems, str):
        raise TypeError(f"stems must be a list of stems, not the string {stems!r}")
    wanted = list(dict.fromkeys(stems))
    if not wanted:
        raise InputError("no images to evaluate: the list of stems is empty")
    by_stem = {p.stem: p for p in pairs}
    unknown = [s for s in wanted if s not in by_stem]
    if unknown:
        maskless = {image_stem(p) for p in unpaired}
        listed = ", ".join(f"{s!r} (no mask)" if s in maskless else repr(s) for s in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        known = ", ".join(list(by_stem)[:5]) + (", ..." if len(by_stem) > 5 else "")
        raise InputError(
            f"{len(unknown)} of {len(wanted)} requested images are not among the images with "
            f"masks: {listed}{more} (there are {len(by_stem)}: {known})"
        )
    return [by_stem[s] for s in wanted]


def _pixel_size(file_mpp: float | None, mpp: float | None, card: ModelCard) -> PixelSize:
    if file_mpp:
        return PixelSize(float(file_mpp), "file")
    if mpp:
        return PixelSize(float(mpp), "argument")
    if card.default_input_mpp:
        return PixelSize(float(card.default_input_mpp), "model card")
    return PixelSize(None, "unknown")


def _score_pair(
    pair: ImagePair,
    net: torch.nn.Module,
    card: ModelCard,
    *,
    mpp: float | None,
    device: torch.device,
    precision: str,
    tta: bool,
    min_object_um2: float | None,
    cancel: Callable[[], bool],
    colour: bool = True,
) -> tuple[Scores, PixelSize]:
    """Segment one image and score it against its mask."""
    with open_slide(pair.image) as slide:
        shape = (int(slide.shape[0]), int(slide.shape[1]))
        size = _pixel_size(slide.mpp, mpp, card)
        truth = read_mask(pair.mask, shape=shape)
        check_same_shape(truth, shape, (f"mask {pair.mask.name}", f"image {pair.image.name}"))
        options: dict[str, Any] = {
            "mpp": size.mpp,
            "device": device,
            "precision": precision,
            "tta": tta,
            "min_object_um2": min_object_um2,
            "cancel": cancel,
            "colour": colour,
        }
        if shape[0] * shape[1] <= IN_MEMORY_PIXELS:
            return score(segment(slide, net, **options), truth), size
        with tempfile.TemporaryDirectory(prefix="slide-unet-evaluate-") as tmp:
            pred = segment(slide, net, out=Path(tmp) / "prediction.zarr", **options)
            return score(pred, truth), size


def evaluate(
    model: Any,
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tta: bool = False,
    min_object_um2: float | None = None,
    colour: bool = True,
    stems: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
) -> Evaluation:
    """Segment every image of a folder that has an expert mask, and score it.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        A bundled or user model name, a model file, or a loaded model with its
        card as ``.card`` (what :func:`~slide_unet.core.model.store.load_model`
        accepts). It is loaded once, on ``device``.
    images : str or os.PathLike
        Folder of images (TIFF, OME-TIFF, SVS, PNG, JPEG).
    masks : str or os.PathLike
        Folder of masks, each with its image's file stem, in any format
        :func:`~slide_unet.core.masks.io.read_mask` reads; non-zero is
        foreground. Images without a mask are skipped (see
        :attr:`Evaluation.unpaired`).
    mpp : float, optional
        Input pixel size in µm for images whose file does not record one
        (default: the card's ``default_input_mpp``). A file's own pixel size
        always wins.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    precision : str
        As for :func:`~slide_unet.core.inference.segment.segment`; ``"fp32"`` reproduces
        a model card's validation figures exactly (training validates in fp32).
    tta : bool
        Test-time augmentation, as for :func:`~slide_unet.core.inference.segment.segment`
        (model cards' figures are without it).
    min_object_um2 : float, optional
        Remove objects smaller than this (µm²) before scoring, as
        :func:`~slide_unet.core.inference.segment.segment` does (None, the
        default: the model card's, as ``segment``'s; 0 keeps all).
    colour : bool
        Match each image's colour to the card's reference, as ``segment`` does
        (by default, as for a user).
    stems : sequence of str, optional
        Evaluate only the images with these stems (e.g. :func:`held_out_stems`),
        in this order.
    progress : callable, optional
        ``progress(done, total)`` in images: at the start and after each image.
    cancel : callable or threading.Event, optional
        Checked before each image and between batches of tiles; when true or
        set, stop and raise :class:`~slide_unet.core.errors.Cancelled`.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        A missing folder, two files with one stem, no image with a mask, a
        stem in ``stems`` that is not an image with a mask, a mask whose shape
        is not its image's, an unreadable file, or a bad device or ``mpp``.
    slide_unet.core.errors.ModelError
        (a ValueError) A model that cannot be loaded.
    slide_unet.core.errors.Cancelled
        ``cancel`` asked to stop.
    """
    started = time.perf_counter()
    if mpp is not None and not mpp > 0:
        raise InputError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    dev = resolve_device(device)
    cancelled = cancel_check(cancel)
    pairs, unpaired = find_pairs(images, masks)
    if stems is not None:
        pairs = _select(pairs, unpaired, stems)
    from slide_unet.core.model.store import load_model  # torch-heavy; loaded on demand

    net = load_model(model, device=dev)
    card = _card_of(net)
    total = len(pairs)
    if progress is not None:
        progress(0, total)
    per_dice: dict[str, float] = {}
    counts: dict[str, ObjectTotals] = {}
    sizes: dict[str, PixelSize] = {}
    for done, pair in enumerate(pairs, start=1):
        if cancelled():
            raise Cancelled("evaluation cancelled")
        scores, sizes[pair.stem] = _score_pair(
            pair,
            net,
            card,
            mpp=mpp,
            device=dev,
            precision=precision,
            tta=tta,
            min_object_um2=min_object_um2,
            cancel=cancelled,
            colour=colour,
        )
        per_dice[pair.stem], counts[pair.stem] = scores.dice, ObjectTotals.of(scores)
        if progress is not None:
            progress(done, total)
    per_iou = {s: d / (2.0 - d) for s, d in per_dice.items()}
    return Evaluation(
        mean_dice=sum(per_dice.values()) / total,
        per_image=per_dice,
        per_image_iou=per_iou,
        mpp=sizes,
        model=card.name,
        seconds=time.perf_counter() - started,
        mean_iou=sum(per_iou.values()) / total,
        unpaired=tuple(image_stem(p) or p.name for p in unpaired),
        pooled=sum(counts.values(), ObjectTotals()),
        per_image_counts=counts,
    )
