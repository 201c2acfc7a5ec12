"""Evaluation: metrics defined once (:mod:`.metrics`), temperature scaling (:mod:`.calibration`),
figures (:mod:`.plots`) and the HTML comparison report (:mod:`.report`).

Plots and the report import matplotlib/pandas lazily through their own modules; importing this
package only loads numpy/scipy/scikit-learn-backed metrics.
"""
from __future__ import annotations

from .calibration import apply_temperature, calibration_summary, fit_temperature, reliability_diagram, softmax
from .metrics import (
    ECE_BINS,
    accuracy,
    balanced_accuracy,
    brier_score,
    cluster_quality,
    confusion_matrix,
    confusion_order,
    confusion_scores,
    evaluate,
    expected_calibration_error,
    macro_f1,
    nll,
    per_class_accuracy,
    per_class_summary,
    reliability_bins,
    soft_target_metrics,
)


def build_report(*args, **kwargs):  # noqa: D103 - lazy re-export (matplotlib/pandas load on use)
    from .report import build_report as _b

    return _b(*args, **kwargs)


def compare_table(*args, **kwargs):  # noqa: D103 - lazy re-export
    from .report import compare_table as _c

    return _c(*args, **kwargs)


build_report.__doc__ = "Build the self-contained HTML report; see :func:`fairexpr.evaluation.report.build_report`."
compare_table.__doc__ = "Comparison table across runs; see :func:`fairexpr.evaluation.report.compare_table`."

__all__ = [
    "ECE_BINS", "accuracy", "apply_temperature", "balanced_accuracy", "brier_score", "build_report",
    "calibration_summary", "cluster_quality", "compare_table", "confusion_matrix", "confusion_order",
    "confusion_scores", "evaluate", "expected_calibration_error", "fit_temperature", "macro_f1", "nll",
    "per_class_accuracy", "per_class_summary", "reliability_bins", "reliability_diagram", "soft_target_metrics",
    "softmax",
]
