"""MediaPipe face mesh in tracking mode: landmarks (stored subset, pixels) of every face in a frame."""

from __future__ import annotations

import numpy as np

from dubforge.lipsync.geometry import SUBSET

_SUBSET = np.asarray(SUBSET)


class FaceMesh:
    def __init__(self, max_faces: int = 1):
        import os

        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - depends on the install
            from dubforge.errors import StageError

            raise StageError("lip-sync needs mediapipe==0.10.21 (face mesh with bundled models)") from exc
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )

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
