"""The napari plugin of skipseg (npe2 manifest: napari.yaml).

- ``SegmentWidget``: a dock widget that segments the selected image layer (2-D, or a
  stack: the current slice or all of them) with the shipped model or a chosen one (ONNX
  file, embedded model or bioimage.io package), in a worker thread with a napari
  progress bar and a Cancel button. It adds a probability layer and a labels layer,
  named after the input, with ids unique across a stack: "threshold" cells (pixels
  with probability below the threshold, split into 4-connected components, membranes
  0) or "instances" (``skipseg.label``: seeds, watershed and agglomeration, as
  ``segment-run label``; every pixel labelled).
- ``read_ome_zarr``: opens an OME-Zarr image (what ``segment-run predict IN.zarr -o
  OUT.zarr`` and ``skipseg.segment_zarr`` write) as one multiscale layer.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

import skipseg

AVERAGING_CHOICES = ["model default", "none", "flips", "dihedral"]
CELL_CHOICES = ["threshold", "instances"]


def cell_labels(probability: np.ndarray, threshold: float) -> np.ndarray:
    """uint32 labels of the cells of a membrane probability map (2-D or a stack): pixels
    with probability below ``threshold``, split into 4-connected components (as the
    ISBI metric splits them); 0 is membrane. A stack's ids are unique across slices."""
    from scipy import ndimage

    four = ndimage.generate_binary_structure(2, 1)
    if probability.ndim == 2:
        labels, _ = ndimage.label(probability < threshold, structure=four)
        return labels.astype(np.uint32)
    out = np.zeros(probability.shape, np.uint32)
    offset = 0
    for k, p in enumerate(probability):
        labels, n = ndimage.label(p < threshold, structure=four)
        out[k] = np.where(labels > 0, labels + offset, 0)
        offset += n
    return out


def as_engine_dtype(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float32 pass as they are (zero-copy); float64 becomes float32;
    other types are refused with a message."""
    if image.dtype in (np.uint8, np.uint16, np.float32):
        return image
    if image.dtype == np.float64:
        return image.astype(np.float32)
    raise TypeError(
        f"layer data is {image.dtype}: skipseg segments uint8, uint16 and float32 images "
        "(float intensities in [0, 1])"
    )


def _layer_data(layer) -> np.ndarray:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return np.asarray(data)


class _Ticks(QObject):
    """Carries the engine's progress from the worker thread to the GUI thread."""

    tick = Signal(int, int)

class SegmentWidget(QWidget):
    """The dock widget; napari builds it with the viewer (``napari_viewer``)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._models: dict[str, skipseg.Model] = {}
        self._cancel = threading.Event()
        self._worker = None
        self._progress = None
        self._ticks = _Ticks()
        self._ticks.tick.connect(self._on_tick)
        #: how the last run ended: "done", "cancelled" or "failed: ..." (None before)
        self.last_status: Optional[str] = None

        self.layer_combo = QComboBox()
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("shipped model (isbi-small-bce)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_path)
        model_row.addWidget(browse)
        self.tile = QSpinBox()
        self.tile.setRange(0, 65536)
        self.tile.setSpecialValueText("auto")
        self.halo = QSpinBox()
        self.halo.setRange(-1, 4096)
        self.halo.setValue(-1)
        self.halo.setSpecialValueText("model's")
        self.averaging = QComboBox()
        self.averaging.addItems(AVERAGING_CHOICES)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.cells = QComboBox()
        self.cells.addItems(CELL_CHOICES)
        self.all_slices = QCheckBox("all slices of a stack")
        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)

        form = QFormLayout()
        form.addRow("image layer", self.layer_combo)
        form.addRow("model", model_row)
        form.addRow("tile (px)", self.tile)
        form.addRow("halo (px)", self.halo)
        form.addRow("averaging", self.averaging)
        form.addRow("threshold", self.threshold)
        form.addRow("cells", self.cells)
        form.addRow(self.all_slices)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # --- controls -----------------------------------------------------------------
    def _refresh_layers(self, *_):
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        names = [l.name for l in self.viewer.layers if isinstance(l, Image) and not l.rgb]
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "skipseg model", "", "Models (*.onnx *.skipseg *.zip *.yaml)")
        if path:
            self.model_path.setText(path)

    def model(self) -> skipseg.Model:
        key = self.model_path.text().strip()
        if key not in self._models:
            self._models[key] = skipseg.Model(key or None)
        return self._models[key]

    def options(self) -> dict[str, Any]:
        avg = self.averaging.currentText()
        return dict(
            tile=self.tile.value() or None,
            halo=None if self.halo.value() < 0 else self.halo.value(),
            averaging=None if avg == "model default" else avg,
        )

    # --- the work -----------------------------------------------------------------
    def run(self, layer_name: Optional[str] = None):
        """Segment the chosen layer in a worker thread; returns the worker (its
        ``returned`` signal fires after the layers are added)."""
        name = layer_name or self.layer_combo.currentText()
        if not name:
            show_error("skipseg: no image layer to segment")
            return None
        layer = self.viewer.layers[name]
        try:
            data = as_engine_dtype(_layer_data(layer))
            model = self.model()
        except (TypeError, skipseg.SkipsegError) as e:
            show_error(f"skipseg: {e}")
            return None
        if data.ndim == 2:
            slices, which = data[np.newaxis], None
        elif data.ndim == 3 and self.all_slices.isChecked():
            slices, which = data, None
        elif data.ndim == 3:
            which = int(self.viewer.dims.current_step[0])
            slices = data[which : which + 1]
        else:
            show_error(f"skipseg: layer {name} is {data.ndim}-D; 2-D images and stacks only")
            return None
        options = self.options()
        threshold = self.threshold.value()
        instances = self.cells.currentText() == "instances"
        self._cancel.clear()
        ticks = self._ticks

        def work():
            out = np.zeros(slices.shape, np.float32)
            for k, image in enumerate(slices):

                def progress(done, total, k=k):
                    ticks.tick.emit(k * total + done, len(slices) * total)
                    return not self._cancel.is_set()

                try:
                    out[k] = model.predict(image, progress=progress, **options)
                except skipseg.CancelledError:
                    return None  # cancelled: nothing to add
            return out if data.ndim == 3 and which is None else out[0]

        worker = create_worker(work, _start_thread=False)
        self._progress = napari_progress(total=0, desc=f"skipseg: {name}")
        worker.returned.connect(lambda p: self._finish(layer, p, threshold, instances, which))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel(self):
        """Stop the running segmentation after the tile in progress."""
        self._cancel.set()

    def _on_tick(self, done, total):
        if self._progress is not None:
            if self._progress.total != total:
                self._progress.total = total
            self._progress.n = done
            self._progress.refresh()

    def _finish(self, layer, probability, threshold, instances, which):
        if probability is None:
            self.last_status = "cancelled"
            show_info("skipseg: cancelled")
        else:
            self.last_status = "done"
            self._add_layers(layer, probability, threshold, instances, which)

    def _on_error(self, error):
        self.last_status = f"failed: {error}"
        show_error(f"skipseg: {error}")

    def _on_finished(self):
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _add_layers(self, layer, probability, threshold, instances, which):
        suffix = f" [slice {which}]" if which is not None else ""
        scale = tuple(layer.scale[-probability.ndim :])
        translate = tuple(layer.translate[-probability.ndim :])
        self.viewer.add_image(
            probability,
            name=f"{layer.name} membrane probability{suffix}",
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            opacity=0.5,
            scale=scale,
            translate=translate,
        )
        labels = skipseg.label(probability) if instances else cell_labels(probability, threshold)
        self.viewer.add_labels(
            labels,
            name=f"{layer.name} labels{suffix}",
            opacity=0.4,
            scale=scale,
            translate=translate,
        )



def _multiscales(group) -> Optional[list]:
    attrs = dict(group.attrs)
    if "ome" in attrs:  # OME-NGFF 0.5 (Zarr v3)
        attrs = attrs["ome"]
    return attrs.get("multiscales")


def read_ome_zarr(path):
    """napari reader: an OME-Zarr image (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) as one
    multiscale image layer, its levels read lazily; None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if not path.rstrip("/").endswith(".zarr"):
        return None
    try:
        import zarr

        group = zarr.open_group(path, mode="r")
        multiscales = _multiscales(group)
    except Exception:  # not a Zarr group: another reader's file
        return None
    if not multiscales:
        return None
    datasets = multiscales[0]["datasets"]
    levels = [group[d["path"]] for d in datasets]

    def reader(_path):
        name = Path(path).name
        meta = {"name": name, "multiscale": len(levels) > 1}
        if levels[0].dtype == np.float32:
            meta["contrast_limits"] = (0.0, 1.0)
        return [(levels if len(levels) > 1 else levels[0], meta, "image")]

    return reader
