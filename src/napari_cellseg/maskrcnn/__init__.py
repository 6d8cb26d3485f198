"""Mask R-CNN: detectron2 checkpoints on torchvision (conversion, the exact detectron2 inference path, fine-tuning)."""
