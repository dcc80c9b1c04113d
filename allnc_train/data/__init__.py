"""The trainer's data: long-tailed subsets, readers, datasets, samplers, augmentation, loaders.

    longtail.py   long-tailed subsets and splits, shot groups (pure functions of label arrays)
    readers.py    image folders, ``path label`` split files, image files
    datasets.py   the datasets and transforms, and the bundle a run trains on (build_data)
    samplers.py   instance / class-balanced / square-root / reversed samplers, one draw per epoch
    seeds.py      every random stream of a run, named in one place
    augment.py    batched image augmentation (crop + flip, SimCLR views), pure functions
    pipeline.py   the batched on-device pipeline
    loaders.py    what the loop iterates: the pipeline's loaders or torch DataLoaders

Adding a dataset: CONTRIBUTING.md, "Adding a dataset".
"""
from __future__ import annotations

from .datasets import DataBundle, FileImages, IndexSamples, TensorImages, build_data, image_transform, simclr_transform
from .longtail import (
    first_per_class,
    holdout_split,
    lt_class_counts,
    lt_subset_indices,
    lt_unused_indices,
    shot_groups,
)
from .readers import decode_images, read_image, read_image_folder, read_split_file

__all__ = ["DataBundle", "FileImages", "IndexSamples", "TensorImages", "build_data", "decode_images",
           "first_per_class", "holdout_split", "image_transform", "lt_class_counts", "lt_subset_indices",
           "lt_unused_indices", "read_image", "read_image_folder", "read_split_file", "shot_groups",
           "simclr_transform"]
