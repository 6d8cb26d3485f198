"""U-Net student: a small, fast segmentation network distilled from any teacher.

model.py (architecture), targets.py (training targets and instance post-processing),
data.py (datasets, split, augmentation), train.py (training generator with checkpoints,
resume and collapse recovery), backend.py (the segmentation backend); distillation from a
teacher, which runs the teacher through the pipeline, is pipeline/distill.py.
"""
