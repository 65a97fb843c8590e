"""The U-Net, its model cards, safetensors headers and the model registry."""
