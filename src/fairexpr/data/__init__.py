"""Datasets (one adapter per published layout), splits, samplers, caching, synthetic faces, audit."""
from .base import (DataError, FERDataset, Sample, ScanResult, SkipReport, decode_image, list_adapters, parse_spec,
                   register_adapter, scan)
from .splits import (align_datasets, align_label_spaces, inject_label_noise, label_fraction, load_split, resolve_split,
                     stratified_holdout, subject_kfold)

__all__ = ["DataError", "FERDataset", "Sample", "ScanResult", "SkipReport", "decode_image", "list_adapters",
           "parse_spec", "register_adapter", "scan", "align_datasets", "align_label_spaces", "inject_label_noise",
           "label_fraction", "load_split", "resolve_split", "stratified_holdout", "subject_kfold"]
