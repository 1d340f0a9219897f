"""``mirage export``: a run's frames, cameras and memory points as a COLMAP or nerfstudio dataset."""
