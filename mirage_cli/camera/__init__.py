"""Camera paths: readers for every supported source, resampling, presets, writers and plots.

Everything produces a ``Trajectory`` (OpenCV ``world_from_cam`` + pixel ``K`` at the render size).
"""

from mirage_cli.camera.trajectory import Trajectory

__all__ = ["Trajectory"]
