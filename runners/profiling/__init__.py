"""Profiling: parameters, MACs cross-checked across counters, latency, BN folding, ONNX.

The library API the ablation runner uses; ``python -m runners.profile`` and
``python -m runners.export`` are thin command lines over it.
"""

from runners.profiling.core import (
    DEFAULT_INPUT_HW,
    ProfileResult,
    TableProfile,
    check_input_hw,
    count_spec,
    profile_spec,
    profile_table,
)
from runners.profiling.counters import COUNTERS, PRIMARY, PrimaryCount, count_primary
from runners.profiling.env import describe_environment
from runners.profiling.inference import FoldReport, fold_bn, make_inference_model
from runners.profiling.latency import LatencyConfig, LatencyResult, measure_latency
from runners.profiling.onnx_export import ExportResult, export_onnx

__all__ = [
    "COUNTERS",
    "DEFAULT_INPUT_HW",
    "PRIMARY",
    "ExportResult",
    "FoldReport",
    "LatencyConfig",
    "LatencyResult",
    "PrimaryCount",
    "ProfileResult",
    "TableProfile",
    "check_input_hw",
    "count_primary",
    "count_spec",
    "describe_environment",
    "export_onnx",
    "fold_bn",
    "make_inference_model",
    "measure_latency",
    "profile_spec",
    "profile_table",
]
