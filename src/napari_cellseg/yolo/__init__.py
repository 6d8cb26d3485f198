"""YOLO (ultralytics): the segmentation backend (backend.py) of YOLO11/YOLOv8 -seg checkpoints and the box
detection backend (detect.py) of YOLO11/YOLOv8 detect checkpoints and YOLOv5 'u' models."""
