"""What the model and device pickers of the widgets show: the choices and their summaries.

Shared by the Segment and Fine-tune widgets. No Qt here, and torch only when a
function is called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["device_choices", "device_summary", "model_summary"]


def device_choices() -> list[str]:
    """``auto`` and the devices this machine has."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def device_summary(choice: str) -> str:
    """What ``choice`` runs on, in words (``auto → NVIDIA H100 (bf16)``)."""
    from slide_unet.core.devices import resolve_device, resolve_precision

    device = resolve_device(choice)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    else:
        name = device.type.upper()
    precision = "bf16" if resolve_precision("auto", device) is not None else "fp32"
    return f"{choice} → {name} ({precision})"


def model_summary(card: Any) -> str:
    """A model's pixel size and validation Dice, for the picker: the cross-validated
    mean and its spread over folds when the card has them (the honest figure)."""
    parts = []
    if card.working_mpp:
        parts.append(f"works at {card.working_mpp:g} µm/px")
    validation = card.validation or {}
    dice, spread = validation.get("mean_dice"), validation.get("sd_over_folds")
    if dice is not None and spread is not None:
        parts.append(f"cross-validated Dice {dice:.3f} ± {spread:.3f}")
    elif dice is not None:
        # One split: say how few images the figure rests on (the bundled glomeruli
        # card's 0.931 is its best epoch on 3 tiles).
        count = validation.get("n_images")
        on = f" on {count} held-out image{'s' if count != 1 else ''}" if count else ""
        parts.append(f"validation Dice {dice:.3f}{on}")
    area = getattr(card, "min_object_um2", 0.0)
    if area:  # applied by default: say so where the model is picked, not only in Advanced
        parts.append(f"drops objects under {area:,.0f} µm²")
    return ", ".join(parts) or "no card figures"
