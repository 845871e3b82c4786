"""MediaPipe face mesh in tracking mode: landmarks (stored subset, pixels) of every face in a frame."""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

import numpy as np

from dubforge.lipsync.geometry import SUBSET

_SUBSET = np.asarray(SUBSET)
# Chatter of mediapipe's C++ graph (absl before InitializeLog, TFLite's delegate notice, model warnings that
# do not apply to face mesh); every other line written to stderr is passed on.
_NOISE = re.compile(
    r"(All log messages before absl::InitializeLog|Created TensorFlow Lite XNNPACK delegate|"
    r"Feedback manager requires a model|inference_feedback_manager\.cc|gl_context|"
    r"Initialized TensorFlow Lite runtime|landmark_projection_calculator\.cc.*NORM_RECT without IMAGE_DIMENSIONS)"
)


def _patch_protobuf() -> None:
    """mediapipe's C++ bindings look up MessageFactory.GetPrototype, which protobuf >= 5 removed (its
    replacement is message_factory.GetMessageClass); without it they print an AttributeError at start-up."""
    from google.protobuf import message_factory

    if not hasattr(message_factory.MessageFactory, "GetPrototype") and hasattr(message_factory, "GetMessageClass"):
        message_factory.MessageFactory.GetPrototype = lambda self, descriptor: message_factory.GetMessageClass(descriptor)


_FILTER: dict = {}


def filter_native_stderr() -> None:
    """Filter file descriptor 2 for the rest of the process: C++ code (mediapipe's graph threads log
    whenever a model starts) writes there beyond Python's reach. fd 2 becomes a pipe; a daemon thread
    passes every line that is not known start-up noise on to the original stderr at once. Idempotent;
    at exit the original stderr is restored and the pipe drained."""

    if _FILTER or os.environ.get("DUBFORGE_RAW_STDERR"):
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line + b"\n" for line in lines if not _NOISE.search(line.decode(errors="replace"))]
                if kept:
                    os.write(original, b"".join(kept))
            if pending and not _NOISE.search(pending.decode(errors="replace")):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=2.0)

    _FILTER.update(original=original, thread=thread)
    atexit.register(restore)


def _quiet_python_logging() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")  # read when the native library loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with mediapipe
        pass


class FaceMesh:
    """static=True: every frame is detected afresh (no tracking, no temporal smoothing): the scorecard's mode."""

    def __init__(self, max_faces: int = 1, static: bool = False):
        _quiet_python_logging()
        try:
            _patch_protobuf()
            filter_native_stderr()
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )
        except ImportError as exc:  # pragma: no cover - depends on the install
            from dubforge.core.errors import StageError

            raise StageError("lip-sync needs mediapipe==0.10.21 (face mesh with bundled models)") from exc

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks (len(SUBSET), 2) in pixels for each face found in an RGB uint8 image."""
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(p.x, p.y) for p in face.landmark], np.float32)[_SUBSET]
            faces.append(pts * np.array([w, h], np.float32))
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
