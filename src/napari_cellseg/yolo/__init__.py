"""YOLO (ultralytics): the segmentation backend (load, tiled predict) of YOLO11/YOLOv8 checkpoints."""
