"""skipseg: membrane segmentation of EM images (Drozdzal et al. 2016) on the skipseg runtime.

- ``Model(path=None)``: the shipped model, an ONNX file, an embedded model or a
  bioimage.io package; ``model.predict(image, ...)`` gives float32 membrane probabilities,
  the same numbers as ``segment-run predict --float``; ``model.info`` describes it.
- ``segment_zarr(input, output, shard=(i, n), ...)``: the OME-Zarr shard worker of
  ``segment-run predict IN.zarr -o OUT.zarr --shard I/N`` (resumable).
- ``evaluate(labels, proposal, ...)``: V_rand and V_info as ``segment-run eval``.
- ``label(probability, ...)``: instance labels (uint32 ids) as ``segment-run label``.

Errors are ``SkipsegError`` subclasses (``ModelError``, ``InputError``, ``FileError``,
``EngineError``, ``CancelledError``) carrying the runtime's message; a wrong array type
raises ``TypeError``, a wrong option value ``ValueError``.
"""

from ._skipseg import (
    CancelledError,
    EngineError,
    FileError,
    InputError,
    Model,
    ModelError,
    SkipsegError,
    __version__,
    evaluate,
    label,
    segment_zarr,
)

__all__ = [
    "CancelledError",
    "EngineError",
    "FileError",
    "InputError",
    "Model",
    "ModelError",
    "SkipsegError",
    "__version__",
    "evaluate",
    "label",
    "segment_zarr",
]
