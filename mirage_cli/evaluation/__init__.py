"""``mirage eval``: camera following, revisit consistency, temporal stability and seams of a video
against its camera path, from OpenCV's dense flow and essential matrices (no model download).

Modules: ``inputs`` (frames, cameras, chunk boundaries), ``flow`` (DIS flow, forward-backward check),
``camera_following``, ``revisit``, ``frames`` (PSNR, SSIM, stability, seams), ``document`` (the JSON
document and the table).
"""
