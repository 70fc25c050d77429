"""Serving a finished run: the Predictor, export (merged weights, ONNX) and pushing to the Hub."""
