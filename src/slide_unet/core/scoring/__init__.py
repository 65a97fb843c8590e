"""Scores of a mask against the truth: Dice, IoU and object matching."""
