"""Type stubs of the extension module (python/src/lib.rs)."""

from os import PathLike
from typing import Any, Callable, Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Averaging = Literal["none", "flips", "dihedral"]
Blend = Literal["crop", "linear"]
# progress(done, total); returning False stops the work (predict: CancelledError)
Progress = Callable[[int, int], Optional[bool]]
StrPath = Union[str, "PathLike[str]"]

class SkipsegError(Exception):
    """Base class of every error skipseg raises."""

class ModelError(SkipsegError):
    """The model file is unreadable, not a skipseg model, or not what its package declares."""

class InputError(SkipsegError):
    """The image cannot be segmented as given (shape, size, no finite pixel, tiling)."""

class FileError(SkipsegError):
    """A file or Zarr store could not be read or written, or is not what it should be."""

class EngineError(SkipsegError):
    """The inference engine failed."""

class CancelledError(SkipsegError):
    """The progress callback asked the work to stop (it returned False)."""

class Model:
    """A segmentation model.

    path: None for the shipped model (models/isbi-small-bce.onnx, compiled in), or an ONNX
    file exported by segment-train, an embedded model (segment-run optimize --embedded) or
    a bioimage.io package (folder or .zip). Raises ModelError or FileError.
    """

    def __init__(self, path: Optional[StrPath] = None) -> None: ...
    @property
    def info(self) -> dict[str, Any]:
        """source, architecture, channels, down_factor, receptive_radius (px),
        default_halo (px), default_averaging, preprocessing (dict with a description),
        dropout (whether mc_samples can be used)."""
    def predict(
        self,
        image: npt.NDArray[Union[np.uint8, np.uint16, np.float32]],
        *,
        tile: Optional[int] = None,
        halo: Optional[int] = None,
        averaging: Optional[Averaging] = None,
        blend: Blend = "crop",
        threads: Optional[int] = None,
        mc_samples: int = 0,
        seed: int = 0,
        progress: Optional[Progress] = None,
        out: Optional[npt.NDArray[np.float32]] = None,
    ) -> npt.NDArray[np.float32]:
        """Membrane probabilities (float32, the image's shape) of a 2-D uint8 / uint16 /
        float32 image: what ``segment-run predict --float`` computes for an image file with
        these pixels and options.

        tile, halo: tile core and context in pixels (None: the model's defaults; the whole
        image in one window when it fits). averaging: None (the model's default), 'none',
        'flips' (4 passes) or 'dihedral' (8 passes). blend: how tiles meet. threads: engine
        threads (None: every core). mc_samples, seed: Monte-Carlo dropout (a model trained
        with dropout). progress(done_tiles, total_tiles) runs after every tile; returning
        False stops with CancelledError. out: a float32 array of the image's shape (any
        strides) to write into and return, instead of a new array. 8-bit pixels are scaled by 1/255, 16-bit by
        1/65535, float taken as is; NaN/inf pixels are missing. The GIL is released while
        the engine runs, so other Python threads keep going.
        """

def segment_zarr(
    input: StrPath,
    output: StrPath,
    *,
    shard: Tuple[int, int] = (0, 1),
    model: Optional[Model] = None,
    tile: Optional[int] = None,
    halo: Optional[int] = None,
    averaging: Optional[Averaging] = None,
    blend: Blend = "crop",
    threads: Optional[int] = None,
    float: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """The shard worker of ``segment-run predict IN.zarr -o OUT.zarr --shard I/N``: segment
    an OME-Zarr image or volume into an OME-Zarr output of the same shape and chunks
    (uint8, or float32 with float=True). shard=(i, n): this worker's part of n; re-running
    skips finished chunks. Returns the worker's report (blocks_total, blocks_in_shard,
    blocks_skipped, blocks_computed, slices, pixels_computed, pyramid_levels_built,
    seconds)."""

def label(
    probability: npt.NDArray[Any],
    *,
    seeds: str | None = None,
    seed_sigma: float | None = None,
    seed_max: float | None = None,
    merge_threshold: float | None = None,
    min_size: int | None = None,
    first_id: int = 1,
) -> npt.NDArray[np.uint32]:
    """Instance labels of a membrane probability map, as ``segment-run label
    --probabilities``: 2-D or a stack [slices, height, width] (float32 in [0, 1]; uint8 /
    uint16 scaled); uint32 ids of the same shape, every pixel labelled, ids running on
    across a stack from first_id. seeds: "distance", "minima" or "components"; options left at None take
    ``segment-run label``'s defaults."""

def evaluate(
    labels: npt.NDArray[Any],
    proposal: npt.NDArray[Any],
    *,
    thinning: bool = True,
    membrane_high: bool = False,
) -> dict[str, Any]:
    """V_rand and V_info of the ISBI 2012 challenge, as ``segment-run eval --json`` reports
    them for image files with these pixels. labels: ground truth (cell 255 or 1.0,
    membrane 0); proposal: cell-high in [0, 1], or a membrane probability with
    membrane_high=True. 2-D or stacks [slices, height, width] of one shape, uint8 /
    uint16 / float32 / bool. thinning=True is the official definition."""
