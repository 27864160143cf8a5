"""Deployment exports of trained dsr models (ONNX in sherpa-onnx's layout, int8 variants)."""

from dsr.export.onnx import (
    OnnxExportOptions,
    OnnxExportResult,
    StreamingExport,
    check_exportable,
    check_streamable,
    export_onnx,
    export_onnx_model,
)

__all__ = [
    "OnnxExportOptions",
    "OnnxExportResult",
    "StreamingExport",
    "check_exportable",
    "check_streamable",
    "export_onnx",
    "export_onnx_model",
]
