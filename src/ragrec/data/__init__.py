"""The interaction data layer: loaders for published formats, preprocessing, splits, item text."""

from ragrec.data.dataset import DatasetStats, InteractionData
from ragrec.data.loaders import FORMATS, DataMapping, TableMapping, load_raw
from ragrec.data.preprocess import PreprocessConfig, preprocess
from ragrec.data.reviews import describe_from_reviews, review_terms
from ragrec.data.sources import SOURCES, PullReport, load_prepared, prepare, pull
from ragrec.data.split import SplitConfig, apply_split, leave_one_out, split_from_file, temporal_ratio
from ragrec.data.text import render_item_text

__all__ = [
    "DataMapping",
    "DatasetStats",
    "FORMATS",
    "InteractionData",
    "PreprocessConfig",
    "PullReport",
    "SOURCES",
    "SplitConfig",
    "TableMapping",
    "apply_split",
    "describe_from_reviews",
    "leave_one_out",
    "load_prepared",
    "load_raw",
    "prepare",
    "preprocess",
    "pull",
    "render_item_text",
    "review_terms",
    "split_from_file",
    "temporal_ratio",
]
