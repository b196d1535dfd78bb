"""ONNX export of the neural detectors and scoring with onnxruntime.

``streamguard export onnx --model-dir DIR`` writes ``DIR/model.onnx`` (the forward pass from
collated tensors to the probability of the vulnerable class, dynamic batch / length / node /
edge axes) and ``DIR/onnx_export.json`` (opset, versions, inputs, and the torch-vs-onnxruntime
parity measured right after the export). ``load_detector(DIR, use_onnx=True)`` then scores with
:class:`~streamguard_core.export.runtime.OnnxDetector`: the same preprocessing as the torch
detector, the forward pass in an ``onnxruntime.InferenceSession``.

- :mod:`streamguard_core.export.onnx`: the exporter and the per-kind graph specs.
- :mod:`streamguard_core.export.runtime`: the onnxruntime detector and when it is used.
- :mod:`streamguard_core.export.cli`: ``streamguard export onnx``.
"""
