from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    PNG: _ClassVar[ImageFormat]
    RAW_FLOAT32: _ClassVar[ImageFormat]
    RAW_UINT8: _ClassVar[ImageFormat]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    GENERATOR: _ClassVar[ModelKind]
    CONDITIONAL_GENERATOR: _ClassVar[ModelKind]
    CLASSIFIER: _ClassVar[ModelKind]

class InterpolationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_METHOD_UNSPECIFIED: _ClassVar[InterpolationMethod]
    LERP: _ClassVar[InterpolationMethod]
    SLERP: _ClassVar[InterpolationMethod]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
PNG: ImageFormat
RAW_FLOAT32: ImageFormat
RAW_UINT8: ImageFormat
MODEL_KIND_UNSPECIFIED: ModelKind
GENERATOR: ModelKind
CONDITIONAL_GENERATOR: ModelKind
CLASSIFIER: ModelKind
INTERPOLATION_METHOD_UNSPECIFIED: InterpolationMethod
LERP: InterpolationMethod
SLERP: InterpolationMethod

class Latent(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class LatentSource(_message.Message):
    __slots__ = ("seed", "latent")
    SEED_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    seed: int
    latent: Latent
    def __init__(self, seed: _Optional[int] = ..., latent: _Optional[_Union[Latent, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DTYPE_UNSPECIFIED: _ClassVar[Tensor.DType]
        FLOAT32: _ClassVar[Tensor.DType]
        UINT8: _ClassVar[Tensor.DType]
    DTYPE_UNSPECIFIED: Tensor.DType
    FLOAT32: Tensor.DType
    UINT8: Tensor.DType
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Tensor.DType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Tensor.DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassBlend(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ChannelEdit(_message.Message):
    __slots__ = ("layer", "channels", "scale")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    scale: float
    def __init__(self, layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., scale: _Optional[float] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("seed", "latent", "label", "png", "tensor", "class_weights")
    SEED_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CLASS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    seed: int
    latent: Latent
    label: int
    png: bytes
    tensor: Tensor
    class_weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, seed: _Optional[int] = ..., latent: _Optional[_Union[Latent, _Mapping]] = ..., label: _Optional[int] = ..., png: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., class_weights: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "latent_dim", "prior", "class_names", "channels", "height", "width", "layer_names", "dataset", "epoch", "family", "parameters", "metrics_json", "backend", "editable_layers", "class_blending")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    PRIOR_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    LAYER_NAMES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    EDITABLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    CLASS_BLENDING_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    latent_dim: int
    prior: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    channels: int
    height: int
    width: int
    layer_names: _containers.RepeatedScalarFieldContainer[str]
    dataset: str
    epoch: int
    family: str
    parameters: int
    metrics_json: str
    backend: str
    editable_layers: _containers.RepeatedCompositeFieldContainer[EditableLayer]
    class_blending: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., latent_dim: _Optional[int] = ..., prior: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., channels: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., layer_names: _Optional[_Iterable[str]] = ..., dataset: _Optional[str] = ..., epoch: _Optional[int] = ..., family: _Optional[str] = ..., parameters: _Optional[int] = ..., metrics_json: _Optional[str] = ..., backend: _Optional[str] = ..., editable_layers: _Optional[_Iterable[_Union[EditableLayer, _Mapping]]] = ..., class_blending: _Optional[bool] = ...) -> None: ...

class EditableLayer(_message.Message):
    __slots__ = ("layer", "channels")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channels: int
    def __init__(self, layer: _Optional[str] = ..., channels: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "seeds", "latents", "count", "labels", "format", "psi", "blends", "edits")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    BLENDS_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    model: str
    seeds: _containers.RepeatedScalarFieldContainer[int]
    latents: _containers.RepeatedCompositeFieldContainer[Latent]
    count: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    format: ImageFormat
    psi: float
    blends: _containers.RepeatedCompositeFieldContainer[ClassBlend]
    edits: _containers.RepeatedCompositeFieldContainer[ChannelEdit]
    def __init__(self, model: _Optional[str] = ..., seeds: _Optional[_Iterable[int]] = ..., latents: _Optional[_Iterable[_Union[Latent, _Mapping]]] = ..., count: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., psi: _Optional[float] = ..., blends: _Optional[_Iterable[_Union[ClassBlend, _Mapping]]] = ..., edits: _Optional[_Iterable[_Union[ChannelEdit, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("model", "keys", "steps", "method", "label", "format", "gif", "gif_frame_ms", "psi", "blends")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    GIF_FIELD_NUMBER: _ClassVar[int]
    GIF_FRAME_MS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    BLENDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    keys: _containers.RepeatedCompositeFieldContainer[LatentSource]
    steps: int
    method: InterpolationMethod
    label: int
    format: ImageFormat
    gif: bool
    gif_frame_ms: int
    psi: float
    blends: _containers.RepeatedCompositeFieldContainer[ClassBlend]
    def __init__(self, model: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[LatentSource, _Mapping]]] = ..., steps: _Optional[int] = ..., method: _Optional[_Union[InterpolationMethod, str]] = ..., label: _Optional[int] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., gif: _Optional[bool] = ..., gif_frame_ms: _Optional[int] = ..., psi: _Optional[float] = ..., blends: _Optional[_Iterable[_Union[ClassBlend, _Mapping]]] = ...) -> None: ...

class InterpolateFrame(_message.Message):
    __slots__ = ("index", "t", "image", "gif")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    GIF_FIELD_NUMBER: _ClassVar[int]
    index: int
    t: float
    image: GeneratedImage
    gif: bytes
    def __init__(self, index: _Optional[int] = ..., t: _Optional[float] = ..., image: _Optional[_Union[GeneratedImage, _Mapping]] = ..., gif: _Optional[bytes] = ...) -> None: ...

class ClassMapRequest(_message.Message):
    __slots__ = ("model", "classifier", "resolution", "axis_x", "axis_y", "fixed", "range_min", "range_max", "plane", "label", "render_png", "blend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    AXIS_X_FIELD_NUMBER: _ClassVar[int]
    AXIS_Y_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    RANGE_MIN_FIELD_NUMBER: _ClassVar[int]
    RANGE_MAX_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RENDER_PNG_FIELD_NUMBER: _ClassVar[int]
    BLEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    classifier: str
    resolution: int
    axis_x: int
    axis_y: int
    fixed: _containers.RepeatedScalarFieldContainer[float]
    range_min: float
    range_max: float
    plane: _containers.RepeatedCompositeFieldContainer[LatentSource]
    label: int
    render_png: bool
    blend: ClassBlend
    def __init__(self, model: _Optional[str] = ..., classifier: _Optional[str] = ..., resolution: _Optional[int] = ..., axis_x: _Optional[int] = ..., axis_y: _Optional[int] = ..., fixed: _Optional[_Iterable[float]] = ..., range_min: _Optional[float] = ..., range_max: _Optional[float] = ..., plane: _Optional[_Iterable[_Union[LatentSource, _Mapping]]] = ..., label: _Optional[int] = ..., render_png: _Optional[bool] = ..., blend: _Optional[_Union[ClassBlend, _Mapping]] = ...) -> None: ...

class ClassShare(_message.Message):
    __slots__ = ("class_id", "name", "share")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    share: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., share: _Optional[float] = ...) -> None: ...

class ClassMapResponse(_message.Message):
    __slots__ = ("resolution", "class_ids", "confidences", "shares", "class_names", "png", "cached", "classifier")
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    resolution: int
    class_ids: _containers.RepeatedScalarFieldContainer[int]
    confidences: _containers.RepeatedScalarFieldContainer[float]
    shares: _containers.RepeatedCompositeFieldContainer[ClassShare]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    png: bytes
    cached: bool
    classifier: str
    def __init__(self, resolution: _Optional[int] = ..., class_ids: _Optional[_Iterable[int]] = ..., confidences: _Optional[_Iterable[float]] = ..., shares: _Optional[_Iterable[_Union[ClassShare, _Mapping]]] = ..., class_names: _Optional[_Iterable[str]] = ..., png: _Optional[bytes] = ..., cached: _Optional[bool] = ..., classifier: _Optional[str] = ...) -> None: ...

class LayerActivationsRequest(_message.Message):
    __slots__ = ("model", "latents", "labels", "layers", "include_tensors", "heatmap_png", "psi", "edits", "blends")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TENSORS_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    BLENDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    latents: _containers.RepeatedCompositeFieldContainer[LatentSource]
    labels: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    include_tensors: bool
    heatmap_png: bool
    psi: float
    edits: _containers.RepeatedCompositeFieldContainer[ChannelEdit]
    blends: _containers.RepeatedCompositeFieldContainer[ClassBlend]
    def __init__(self, model: _Optional[str] = ..., latents: _Optional[_Iterable[_Union[LatentSource, _Mapping]]] = ..., labels: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[str]] = ..., include_tensors: _Optional[bool] = ..., heatmap_png: _Optional[bool] = ..., psi: _Optional[float] = ..., edits: _Optional[_Iterable[_Union[ChannelEdit, _Mapping]]] = ..., blends: _Optional[_Iterable[_Union[ClassBlend, _Mapping]]] = ...) -> None: ...

class LayerActivation(_message.Message):
    __slots__ = ("layer", "shape", "tensor", "channel_means", "mean_map", "heatmaps")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MEANS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MAP_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    tensor: Tensor
    channel_means: Tensor
    mean_map: Tensor
    heatmaps: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, layer: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., channel_means: _Optional[_Union[Tensor, _Mapping]] = ..., mean_map: _Optional[_Union[Tensor, _Mapping]] = ..., heatmaps: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LayerActivationsResponse(_message.Message):
    __slots__ = ("latents", "layers")
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    latents: _containers.RepeatedCompositeFieldContainer[Latent]
    layers: _containers.RepeatedCompositeFieldContainer[LayerActivation]
    def __init__(self, latents: _Optional[_Iterable[_Union[Latent, _Mapping]]] = ..., layers: _Optional[_Iterable[_Union[LayerActivation, _Mapping]]] = ...) -> None: ...
