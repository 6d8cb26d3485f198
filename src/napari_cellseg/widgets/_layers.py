"""Writing results into the viewer without ever losing a user's edits.

Our output layers carry ``metadata["napari_cellseg"]`` with the role, the source
image layer's unique id and a hash of the data as written. A re-run replaces
its own earlier output for that image only while the hash still matches; once
the user has edited the layer, a new layer is added instead.
"""
from __future__ import annotations

import hashlib
import sys
from contextlib import contextmanager

import numpy as np

META_KEY = "napari_cellseg"
CLASS_COLORS = ["#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def data_hash(data) -> str:
    array = np.ascontiguousarray(np.asarray(data))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((array.shape, array.dtype.str)).encode())
    if array.size:
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def precompute_hashes(result) -> None:
    """Hash the result's layer data and build its feature table in the worker thread
    (pandas' first import and large hashes would otherwise stall the GUI thread);
    ``write_result_layers`` reuses them."""
    result.metadata["_layer_hashes"] = {
        "labels": data_hash(result.labels),
        "points": data_hash(result.centroid_coordinates()),
    }
    result.metadata["_features"] = features_of(result)


def is_own_output(layer, source, role: str, kind: str) -> bool:
    meta = layer.metadata.get(META_KEY)
    return (
        isinstance(meta, dict)
        and meta.get("role") == role
        and meta.get("kind") == kind
        and meta.get("source_layer_id") == source.unique_id
    )


def is_edited(layer) -> bool:
    meta = layer.metadata.get(META_KEY, {})
    return meta.get("data_hash") != data_hash(layer.data)


def find_replaceable(viewer, source, role: str, kind: str):
    """Our latest unedited output of this role for this image, or None."""
    for layer in reversed(list(viewer.layers)):
        if is_own_output(layer, source, role, kind) and not is_edited(layer):
            return layer
    return None


def roles_to_build(viewer, source, kind: str = "segment") -> tuple[str, ...]:
    """The output roles a run must build new layers for: those without an earlier unedited layer
    of ours to update in place. Checked on the GUI thread as a run starts, so that the worker
    builds only layers that will be used (a discarded napari layer is freed only by a full
    garbage collection); if the user edits a layer during the run, its replacement is built
    then, on the GUI thread."""
    return tuple(role for role in ("labels", "points") if find_replaceable(viewer, source, role, kind) is None)


def spatial_transform(source, result_ndim: int) -> dict:
    """Scale and translate of the source's non-channel axes, for outputs of ``result_ndim`` axes."""
    scale = list(source.scale)[-result_ndim:]
    translate = list(source.translate)[-result_ndim:]
    return {"scale": scale, "translate": translate}


def _provenance(result, source, role: str, kind: str, data) -> dict:
    meta = result.metadata
    known = meta.get("_layer_hashes", {}).get(role)
    return {
        "role": role,
        "kind": kind,
        "source_layer_id": source.unique_id,
        "source_layer_name": source.name,
        "model": meta.get("model", {}).get("path"),
        "model_sha256": meta.get("model", {}).get("sha256"),
        "backend": meta.get("model", {}).get("backend"),
        "parameters": meta.get("parameters", {}),
        "summary": meta.get("summary", {}),  # the scale used and where it came from (core.result.RunSummary)
        "napari_cellseg_version": meta.get("napari_cellseg_version"),
        "warnings": list(result.warnings),
        "data_hash": known or data_hash(data),
    }


def features_of(result):
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in result.objects.items()})


class SourceInfo:
    """What the writers need of the source image layer (and of the viewer's dims, if given),
    captured on the GUI thread for the worker."""

    def __init__(self, layer, dims=None):
        self.name, self.unique_id = layer.name, layer.unique_id
        self.scale, self.translate = tuple(layer.scale), tuple(layer.translate)
        self.dims = _snapshot(dims)


def _snapshot(dims):
    """A new dims model with the viewer's values (not a copy, which would share the viewer's event
    emitters), for the worker to read while the user moves the sliders."""
    if dims is None:
        return None
    values = getattr(dims, "model_dump", None) or getattr(dims, "dict", None)
    try:
        return type(dims)(**values())
    except Exception:  # noqa: BLE001 - only an optimisation: napari slices the layer when it is added
        return None


def slice_ahead(layer, dims) -> None:
    """Slice a new layer for the viewer's current dims in the worker thread. napari slices a layer
    as it joins the viewer (for Labels: colour-mapping every pixel of the view, about 130 ms on
    the GUI thread for a 4096x4096 image) unless the layer already holds the slice for those dims,
    which it checks itself; if the dims have changed meanwhile, napari just slices again. Uses
    napari's private ``Layer._slice_dims``: where a napari version lacks it, nothing is done here."""
    slice_dims = getattr(layer, "_slice_dims", None)
    if dims is None or slice_dims is None:
        return
    try:
        slice_dims(dims)
    except Exception:  # noqa: BLE001 - only an optimisation
        pass


def _points_style(result, features) -> tuple[dict, list[str]]:
    classes = sorted(set(features["class_name"])) or ["object"]
    color_cycle = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(len(classes))]
    # colour by class; an empty table has no class column values to map
    colouring = {"face_color": "class_name", "face_color_cycle": color_cycle} if result.n_objects else {}
    return colouring, color_cycle


def _warm_vispy_line_patterns() -> None:
    """vispy computes its line dash patterns (about 170 ms of numpy, then cached for the process)
    when the first line visual is made: the first Labels layer's polygon overlay, on the GUI
    thread. Computing them in the worker takes that off the GUI thread; a vispy without this
    module just skips the warm-up."""
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas
    except ImportError:
        return
    DashAtlas()


def build_new_layers(result, source, *, kind: str = "segment", name_suffix: str = "",
                     roles=("labels", "points")) -> dict:
    """The Labels and Points layer objects a first run adds, built in the worker thread.

    A layer object is plain evented Python until it joins a viewer; napari's constructors
    (label colours, feature tables, data ranges) cost the GUI thread a few hundred ms on a
    first run, so they run here. ``write_result_layers`` adds them unless it updates our
    earlier unedited layers in place.
    """
    from napari.layers import Labels, Points

    _warm_vispy_line_patterns()
    transform = spatial_transform(source, result.labels.ndim)
    features = result.metadata.get("_features")
    features = features_of(result) if features is None else features
    layers = {}
    if "labels" in roles:
        layers["labels"] = Labels(
            result.labels, name=f"{source.name} labels{name_suffix}", features=features,
            metadata={META_KEY: _provenance(result, source, "labels", kind, result.labels)}, **transform)
    if "points" in roles:
        coords = result.centroid_coordinates()
        colouring, _ = _points_style(result, features)
        layers["points"] = Points(
            coords, ndim=result.labels.ndim, name=f"{source.name} centroids{name_suffix}", features=features, size=6,
            border_width=0, metadata={META_KEY: _provenance(result, source, "points", kind, coords)},
            **colouring, **transform)
    for layer in layers.values():  # a napari layer as ``source`` (built on the GUI thread) has no dims
        slice_ahead(layer, getattr(source, "dims", None))
    return layers


def write_labels_layer(viewer, source, result, *, kind: str = "segment", name_suffix: str = "", new_layer=None):
    """Update our earlier unedited Labels output for this image in place, or add a new layer."""
    features = result.metadata.get("_features")
    features = features_of(result) if features is None else features
    layer = find_replaceable(viewer, source, "labels", kind)
    meta = _provenance(result, source, "labels", kind, result.labels)
    if layer is None:
        if new_layer is None:
            new_layer = build_new_layers(result, source, kind=kind, name_suffix=name_suffix, roles=("labels",))["labels"]
        viewer.layers.append(new_layer)
        return new_layer
    layer.data = result.labels
    layer.features = features
    layer.metadata = {**layer.metadata, META_KEY: meta}
    return layer


def write_points_layer(viewer, source, result, *, kind: str = "segment", name_suffix: str = "", new_layer=None):
    """Update our earlier unedited Points output (centroids) in place, or add a new layer."""
    features = result.metadata.get("_features")
    features = features_of(result) if features is None else features
    layer = find_replaceable(viewer, source, "points", kind)
    if layer is None:
        if new_layer is None:
            new_layer = build_new_layers(result, source, kind=kind, name_suffix=name_suffix, roles=("points",))["points"]
        viewer.layers.append(new_layer)
        return new_layer
    coords = result.centroid_coordinates()
    colouring, color_cycle = _points_style(result, features)
    # in place: a new layer costs the GUI thread far more than new data
    layer.data = coords
    layer.features = features
    if colouring:
        layer.face_color_cycle = color_cycle
        layer.face_color = "class_name"
    layer.metadata = {**layer.metadata, META_KEY: _provenance(result, source, "points", kind, coords)}
    return layer


def write_result_layers(viewer, source, result, *, kind: str = "segment", name_suffix: str = "", new_layers=None):
    """Add or replace the Labels and Points layers of one result. Returns (labels, points)."""
    new_layers = new_layers or {}
    labels = write_labels_layer(viewer, source, result, kind=kind, name_suffix=name_suffix,
                                new_layer=new_layers.get("labels"))
    points = write_points_layer(viewer, source, result, kind=kind, name_suffix=name_suffix,
                                new_layer=new_layers.get("points"))
    return labels, points


# A Labels layer's painting overlays (polygon tool, brush outline): visible from the start, so
# napari builds their vispy visuals as the layer joins a viewer (invisible overlays wait until shown)
DEFERRABLE_OVERLAYS = ("polygon", "brush_stroke")


def detach_overlays(layer) -> dict:
    """Take the painting overlays off a Labels layer that is not in a viewer yet; give them back
    with ``reattach_overlays``. Building their visuals is about a third of the cost of adding the
    layer, which can then be paid in an event-loop turn of its own. napari reads them only in the
    paint and polygon modes. Uses napari's private ``_overlays`` mapping: where a napari version
    lacks it, nothing is detached and the layer is added whole."""
    overlays = getattr(layer, "_overlays", None)
    if overlays is None or not hasattr(overlays, "update"):
        return {}
    detached = {key: overlays[key] for key in DEFERRABLE_OVERLAYS if key in overlays}
    for key in detached:
        del overlays[key]
    return detached


def reattach_overlays(layer, detached: dict) -> None:
    if detached:
        layer._overlays.update(detached)


def _insert_without_activating(viewer, write, new_layer):
    """``write(new_layer)`` with napari's activation of an inserted layer held back: making it the
    active layer (its controls shown, the viewer's active-layer state updated) is a further cost
    of adding it, which can be paid in a later event-loop turn. Returns (the written layer, whether
    to activate it later). Uses napari's private ``_activate_on_insert`` flag: where a napari
    version lacks it, the layer is activated as it is added."""
    layer_list = viewer.layers
    activates = getattr(layer_list, "_activate_on_insert", None)
    if not isinstance(activates, bool):
        return write(new_layer), False
    earlier = list(layer_list)
    layer_list._activate_on_insert = False
    try:
        written = write(new_layer)
    finally:
        layer_list._activate_on_insert = activates
    added = all(written is not layer for layer in earlier)  # not an earlier layer updated in place
    return written, activates and added


# napari's factories of a layer's GUI parts, looked up in their modules as a layer joins a viewer:
# (module, factory, keyword arguments napari passes, read from the viewer's QtViewer)
GUI_PART_FACTORIES = (
    ("napari._qt.qt_viewer", "create_vispy_layer", lambda qt_viewer: {"font_info": qt_viewer.canvas.font_info()}),
    ("napari._qt.layer_controls.qt_layer_controls_container", "create_qt_layer_controls", lambda qt_viewer: {}),
)


VISPY_LAYER_FACTORY = GUI_PART_FACTORIES[0][:2]


def prebuild_gui_parts(viewer, layer, parts: dict):
    """Build a layer's vispy visual and its Qt controls before it joins ``viewer``, yielding after
    each: they are the larger part of napari's cost to add a layer (15-40 ms each on 2 cores), which
    can then be paid in event-loop turns of their own. Fills ``parts``, {(module, factory):
    (arguments, part)}, for ``use_prebuilt_gui_parts``. Uses napari's private ``window._qt_viewer``
    and the factory functions of ``GUI_PART_FACTORIES``: where these are missing, nothing is built."""
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    if layer is None or qt_viewer is None:
        return
    for module_name, factory_name, arguments_of in GUI_PART_FACTORIES:
        factory = getattr(sys.modules.get(module_name), factory_name, None)
        if factory is None:
            continue
        try:
            kwargs = arguments_of(qt_viewer)
            parts[(module_name, factory_name)] = (kwargs, factory(layer, **kwargs))
        except Exception:  # noqa: BLE001 - only an optimisation: napari builds the part itself
            continue
        yield


@contextmanager
def use_prebuilt_gui_parts(layer, parts: dict):
    """While adding ``layer``: napari's factories hand out (and remove from ``parts``) the prebuilt
    parts, for this layer and the arguments they were built with; any other call goes to napari's
    factory as before."""
    originals = {}

    def handing_out(key, original):
        def factory(target, *args, **kwargs):
            if target is layer and key in parts and not args and kwargs == parts[key][0]:
                return parts.pop(key)[1]
            return original(target, *args, **kwargs)
        return factory

    for key in parts:
        module = sys.modules[key[0]]
        originals[key] = getattr(module, key[1])
        setattr(module, key[1], handing_out(key, originals[key]))
    try:
        yield
    finally:
        for key, original in originals.items():
            setattr(sys.modules[key[0]], key[1], original)


def release_gui_parts(parts: dict) -> None:
    """Close prebuilt parts napari did not take: a vispy layer disconnects from its layer, a Qt
    widget is deleted."""
    while parts:
        _, part = parts.popitem()[1]
        for release in ("close", "deleteLater"):
            if callable(getattr(part, release, None)):
                getattr(part, release)()


def _shows_no_text(text_manager) -> bool:
    """A layer's text settings draw nothing: text hidden, or one constant empty string (napari's default)."""
    return not getattr(text_manager, "visible", True) or getattr(getattr(text_manager, "string", None),
                                                              "constant", None) == ""


def hide_empty_text(vispy_layer, layer) -> None:
    """Hide the text part of a new Points layer's visual while the layer's text settings draw nothing:
    napari draws it anyway, with one empty string, and its first draw (its shader program generated,
    about 40-60 ms, and glyphs rendered, about 55 ms once per canvas, on 2 cores) is most of a new
    Points layer's first paint. The part is shown again, for good, as soon as the text settings
    would draw something (napari keeps it up to date meanwhile). Uses napari's ``node.text`` of its
    Points visual: where it is missing, nothing is hidden."""
    text_visual = getattr(getattr(vispy_layer, "node", None), "text", None)
    text_manager = getattr(layer, "text", None)
    text_events = getattr(text_manager, "events", None)
    if text_visual is None or text_events is None or not _shows_no_text(text_manager):
        return

    import weakref

    hidden = weakref.ref(text_visual)  # the layer's events do not keep a closed visual alive

    def show_text_if_any(*_):
        if not _shows_no_text(text_manager):
            text_events.disconnect(show_text_if_any)
            if hidden() is not None:
                hidden().visible = True

    text_visual.visible = False
    text_events.connect(show_text_if_any)


def _first_drawn_in_a_turn_of_its_own(vispy_layer, layer):
    """Hide a new layer's visual in the turn it joined the scene and show it (as the layer says) in the
    next: its first draw (its shaders generated and compiled, its data uploaded) is then painted apart
    from the paint that follows the adding (the layer list, the controls)."""
    node = getattr(vispy_layer, "node", None)
    if node is None or not getattr(node, "visible", False):
        return
    node.visible = False
    try:
        yield
    finally:
        node.visible = bool(layer.visible)


def _add_in_steps(viewer, write, new_layer):
    """``write(new_layer)`` (which adds it, or updates our earlier layer instead) as GUI steps: the
    layer's visual and its controls, each built in a turn of its own; the layer without its overlays
    and unselected in the next turn, its visual hidden (a Points layer's empty text part stays hidden
    until the layer has text); its visual shown, first drawn, in the next; then each overlay in a turn
    of its own; then its selection as the active layer (as napari does for any new layer)."""
    detached = detach_overlays(new_layer)
    parts = {}
    try:
        yield from prebuild_gui_parts(viewer, new_layer, parts)
        visual = parts.get(VISPY_LAYER_FACTORY, (None, None))[1]
        with use_prebuilt_gui_parts(new_layer, parts):
            written, activate = _insert_without_activating(viewer, write, new_layer)
        if written is new_layer and visual is not None and VISPY_LAYER_FACTORY not in parts:  # napari took it
            hide_empty_text(visual, new_layer)  # in this turn: before the layer's first paint
            yield from _first_drawn_in_a_turn_of_its_own(visual, new_layer)
        while written is new_layer and detached:
            yield
            key = next(iter(detached))
            reattach_overlays(new_layer, {key: detached.pop(key)})
    finally:  # also when the steps are abandoned: overlays come back, parts napari did not take go
        release_gui_parts(parts)
        reattach_overlays(new_layer, detached)
    if activate:
        yield
        if written in viewer.layers:
            viewer.layers.selection.active = written


def write_result_layers_in_steps(viewer, source, result, *, kind: str = "segment", name_suffix: str = "",
                                 new_layers=None):
    """``write_result_layers`` as GUI steps: a generator that yields after each slow napari call, so
    that a widget makes them in separate event-loop turns (see ``WorkerWidget._gui_steps``): a new
    Labels layer, its painting overlays, its selection, then the same for the Points layer."""
    new_layers = new_layers or {}
    yield from _add_in_steps(
        viewer, lambda new: write_labels_layer(viewer, source, result, kind=kind, name_suffix=name_suffix, new_layer=new),
        new_layers.get("labels"))
    yield
    if source in viewer.layers:
        yield from _add_in_steps(
            viewer, lambda new: write_points_layer(viewer, source, result, kind=kind, name_suffix=name_suffix,
                                           new_layer=new),
            new_layers.get("points"))


# --- box detections: a Points layer at box centres and a Shapes layer of rectangles --------------------------
DETECT_KIND = "detect"
DETECT_ROLES = ("centres", "boxes")


def _shapes_data_hash(data) -> str:
    return data_hash(np.asarray(list(data), np.float64).reshape(-1, 4, np.asarray(data[0]).shape[-1])
                     if len(data) else np.zeros((0, 4, 2)))


def _detection_provenance(result, source, role: str, data_hash_value: str) -> dict:
    meta = _provenance(result, source, role, DETECT_KIND, np.zeros(0))
    meta["data_hash"] = data_hash_value
    meta["conf_shown"] = None
    return meta


def is_edited_detection_layer(layer) -> bool:
    meta = layer.metadata.get(META_KEY, {})
    if meta.get("role") == "boxes":
        return meta.get("data_hash") != _shapes_data_hash(layer.data)
    return is_edited(layer)


def find_detection_layer(viewer, source, role: str):
    """Our latest unedited detection output (role "centres" or "boxes") for this image, found by metadata."""
    for layer in reversed(list(viewer.layers)):
        if is_own_output(layer, source, role, DETECT_KIND) and not is_edited_detection_layer(layer):
            return layer
    return None


def write_detection_layers(viewer, source, result, conf: float | None = None):
    """Add, or update in place (our earlier unedited ones for this image), the Points layer of box centres and the
    Shapes layer of rectangles of a ``DetectionResult``, showing the boxes scoring at least ``conf`` (all when
    None). Both carry the per-object table as features (box, centre, area, score, class). Returns (points, shapes)."""
    from napari.layers import Points, Shapes

    shown = result if conf is None else result.scoring_at_least(conf)
    features = features_of(shown)
    transform = spatial_transform(source, len(result.image_shape))
    ndim = len(result.image_shape)
    coords = shown.centre_coordinates().reshape(-1, ndim)
    rectangles = shown.rectangles()
    colouring, color_cycle = _points_style(shown, features)
    points = find_detection_layer(viewer, source, "centres")
    if points is None:
        points = Points(coords, ndim=ndim, name=f"{source.name} detections", features=features, size=6,
                        border_width=0, **colouring, **transform)
        points.metadata = {META_KEY: _detection_provenance(result, source, "centres", data_hash(coords))}
        viewer.layers.append(points)
    else:
        points.data = coords
        points.features = features
        if colouring:
            points.face_color_cycle = color_cycle
            points.face_color = "class_name"
        points.metadata = {**points.metadata,
                           META_KEY: _detection_provenance(result, source, "centres", data_hash(points.data))}
    shapes = find_detection_layer(viewer, source, "boxes")
    if shapes is None:
        shapes = Shapes(rectangles, ndim=ndim, shape_type="rectangle", name=f"{source.name} boxes", features=features,
                        edge_color="#ffff00", face_color="transparent", edge_width=1, **transform)
        viewer.layers.append(shapes)
    else:
        shapes.data = []
        if rectangles:
            shapes.add_rectangles(rectangles, edge_color="#ffff00", face_color="transparent", edge_width=1)
        shapes.features = features
    shapes.metadata = {**shapes.metadata,
                       META_KEY: _detection_provenance(result, source, "boxes", _shapes_data_hash(shapes.data))}
    for layer in (points, shapes):
        layer.metadata[META_KEY]["conf_shown"] = conf
    return points, shapes
