"""Inference on photos and videos: face detection/alignment, predictors (PyTorch and onnxruntime), ONNX
export, video timelines and the web service.

Importing this package never imports torch: :class:`OnnxPredictor` and the whole photo/video pipeline
run with numpy, OpenCV and onnxruntime only; :class:`TorchPredictor` and :mod:`.export` load torch when used.
"""
from .align import align_face, similarity_transform
from .detect import DETECTORS, Face, FaceDetector, HaarDetector, YuNetDetector, create_detector
from .images import decode_rgb
from .pipeline import FacePipeline, FaceRecord, annotate
from .predictor import (OnnxPredictor, Prediction, Predictor, TorchPredictor, load_predictor,
                        normalized_entropy_confidence, softmax)
from .preprocess import Preprocess

__all__ = ["DETECTORS", "Face", "FaceDetector", "FacePipeline", "FaceRecord", "HaarDetector", "OnnxPredictor",
           "Prediction", "Predictor", "Preprocess", "TorchPredictor", "YuNetDetector", "align_face", "annotate",
           "create_detector", "decode_rgb", "load_predictor", "normalized_entropy_confidence", "similarity_transform",
           "softmax"]
