"""What a model file must look like for the role its setting gives it.

Every model file is checked when it loads, from the shapes its graph declares (no inference): a
re-id model takes tall person crops and gives one vector each, a face recogniser takes 112×112
faces, SCRFD has nine outputs, YuNet twelve, a YOLO export one 3-d output. A file given to the
wrong setting (a face model as the re-id model, a re-id model as the detector) is then refused
with a message that names the setting, says what the file looks like and what the setting takes;
not met later with a traceback from onnxruntime or ultralytics at the first frame, nor, worse,
run as it is into an index of meaningless vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from ..errors import ModelMismatchError

Dim = int | None  # None: left free by the model (a dynamic batch, a free image size)
Shape = tuple[Dim, ...]
RoleName = Literal["detector", "reid", "scrfd", "yunet", "face_embedder"]

# The aligned face every face recogniser here is given (face_models.ARCFACE_SIZE).
FACE_SIDE = 112
_SCRFD_OUTPUTS = 9  # scores, boxes and 5 landmarks at strides 8, 16, 32
_YUNET_OUTPUTS = 12  # cls, obj, bbox and kps at strides 8, 16, 32


@dataclass(frozen=True)
class Graph:
    """The input and output shapes a model file declares."""

    inputs: tuple[Shape, ...]
    outputs: tuple[Shape, ...]

    @classmethod
    def of_onnx(cls, session: Any) -> Graph:
        """From an onnxruntime session: symbolic or unknown sizes become None."""
        def shape(arg: Any) -> Shape:
            return tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or ()))

        return cls(tuple(shape(i) for i in session.get_inputs()), tuple(shape(o) for o in session.get_outputs()))

    @classmethod
    def of_openvino(cls, model: Any) -> Graph:
        """From an OpenVINO model (read, not compiled)."""
        def shape(port: Any) -> Shape:
            partial = port.get_partial_shape()
            if partial.rank.is_dynamic:
                return ()
            return tuple(d.get_length() if d.is_static else None for d in partial)

        return cls(tuple(shape(i) for i in model.inputs), tuple(shape(o) for o in model.outputs))

    @property
    def image_size(self) -> tuple[Dim, Dim]:
        """(height, width) of the one image input, or (None, None)."""
        first = self.inputs[0] if self.inputs else ()
        return (first[2], first[3]) if len(first) == 4 else (None, None)

    def describe(self) -> str:
        def text(shape: Shape) -> str:
            return "×".join("N" if i == 0 and d is None else "?" if d is None else str(d)
                            for i, d in enumerate(shape)) or "?"

        ins = ", ".join(text(s) for s in self.inputs) or "nothing"
        if len(self.outputs) == 1:
            outs = f"one {text(self.outputs[0])} output"
        else:
            outs = f"{len(self.outputs)} outputs"
        return f"it takes {ins} and gives {outs}"


def read_graph(path: Path) -> Graph | None:
    """The graph of an ONNX file (onnxruntime) or an OpenVINO IR (.xml), or None when neither
    can read it (a PyTorch checkpoint, a text file)."""
    try:
        if path.suffix.lower() == ".xml":
            import openvino as ov

            return Graph.of_openvino(ov.Core().read_model(str(path)))
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: a file that is not ONNX is answered by None
        return Graph.of_onnx(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    except Exception:  # noqa: BLE001 — both runtimes raise their own types for unreadable files
        return None


def _image_input(g: Graph) -> bool:
    """One input of N×3×H×W images."""
    return len(g.inputs) == 1 and len(g.inputs[0]) == 4 and g.inputs[0][1] in (3, None)


def _one_vector(g: Graph) -> bool:
    return len(g.outputs) == 1 and len(g.outputs[0]) == 2


def _detector(g: Graph) -> bool:
    # ultralytics' exports: one N×(4 + classes)×anchors output (or N×boxes×6 for end-to-end ones).
    return _image_input(g) and len(g.outputs) == 1 and len(g.outputs[0]) == 3


def _reid(g: Graph) -> bool:
    h, w = g.image_size
    # Person crops are tall (256×128 for torchreid's and Intel's models); a square input is a face model's.
    return _image_input(g) and _one_vector(g) and (h is None or w is None or h > w)


def _face_embedder(g: Graph) -> bool:
    h, w = g.image_size
    return _image_input(g) and _one_vector(g) and h in (FACE_SIDE, None) and w in (FACE_SIDE, None)


def _scrfd(g: Graph) -> bool:
    return _image_input(g) and len(g.outputs) == _SCRFD_OUTPUTS


def _yunet(g: Graph) -> bool:
    return _image_input(g) and len(g.outputs) == _YUNET_OUTPUTS


@dataclass(frozen=True)
class Role:
    what: str  # "a person detector": what the setting asks for
    fits: Callable[[Graph], bool]
    expected: str  # what to set instead, in the message


ROLES: dict[RoleName, Role] = {
    "detector": Role("person detector", _detector,
                     "yolov8s.pt, another ultralytics detection model (.pt) or its ONNX or OpenVINO export"),
    "reid": Role("re-id model (person re-identification)", _reid,
                 "reid_0277, osnet_x0_25, or an OpenVINO IR (.xml) or ONNX file that takes N×3×256×128 person "
                 "crops and gives one vector each"),
    "scrfd": Role("face detector with landmarks", _scrfd,
                  "scrfd_2.5g, scrfd_500m or yunet, or an SCRFD or YuNet ONNX file with 5 landmarks"),
    "yunet": Role("face detector with landmarks", _yunet,
                  "scrfd_2.5g, scrfd_500m or yunet, or an SCRFD or YuNet ONNX file with 5 landmarks"),
    "face_embedder": Role("face recognition model", _face_embedder,
                          f"edgeface_xs, dlib, or an ONNX file that takes N×3×{FACE_SIDE}×{FACE_SIDE} aligned faces "
                          "and gives one vector each"),
}


def looks_like(g: Graph) -> str | None:
    """What kind of model the graph is, and the setting that takes it; None when unknown."""
    if _scrfd(g):
        return "an SCRFD face detector (CASTFINDER_FACE_DETECTOR)"
    if _yunet(g):
        return "a YuNet face detector (CASTFINDER_FACE_DETECTOR)"
    if _detector(g):
        return "a person detector (CASTFINDER_DETECTOR)"
    h, w = g.image_size
    if _image_input(g) and _one_vector(g) and h is not None and w is not None:
        if h > w:
            return "a person re-identification model (CASTFINDER_REID_MODEL or CASTFINDER_OSNET_MODEL)"
        if h == w:
            return "a face recognition model (CASTFINDER_FACE_MODEL)"
    return None


def check_role(g: Graph, role: RoleName, *, name: str, setting: str) -> None:
    """Raise ModelMismatchError (naming `setting`) unless the graph fits the role."""
    spec = ROLES[role]
    if spec.fits(g):
        return
    guess = looks_like(g)
    reason = g.describe() + (f"; it looks like {guess}" if guess else "")
    raise ModelMismatchError(spec.what, name, setting, reason, spec.expected)


def mismatch(role: RoleName, *, name: str, setting: str, reason: str) -> ModelMismatchError:
    """The error for a file that is not a model of this role at all (not ONNX, not a checkpoint …)."""
    spec = ROLES[role]
    return ModelMismatchError(spec.what, name, setting, reason, spec.expected)


def unreadable(role: RoleName, *, path: Path, name: str, setting: str, error: BaseException | str) -> ModelMismatchError:
    """The error for a file ONNX Runtime cannot open as the ONNX model a role takes: what the file
    is when that can be told (an OpenVINO IR of another role, a PyTorch checkpoint), else the
    runtime's own first line."""
    suffix = path.suffix.lower()
    graph = read_graph(path) if suffix == ".xml" else None
    if graph is not None:
        guess = looks_like(graph)
        reason = "it is an OpenVINO IR, not an ONNX file" + (f"; it looks like {guess}" if guess else "")
    elif suffix in (".pt", ".pth"):
        reason = "it is a PyTorch checkpoint, not an ONNX file"
    else:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = f"ONNX Runtime cannot read it as a model ({first})"
    return mismatch(role, name=name, setting=setting, reason=reason)
