"""``mirage eval``: camera following, 3D consistency, revisit consistency, temporal stability and seams
of a video against its camera path, from OpenCV's dense flow and essential matrices (no model download).

Modules: ``inputs`` (frames, cameras, chunk boundaries, depth, every input checked before decoding),
``video_file`` (a video's header checks and bounded decoding), ``depth_file`` (--depth), ``reference``
(--reference), ``run_config`` (a run's chunks from its run.json), ``memory_depth`` (a run's depth from
its memory points), ``flow`` (DIS flow, forward-backward check), ``camera_following``,
``trajectory_error`` (ATE), ``reprojection``, ``revisit``, ``frames`` (PSNR, SSIM, stability, seams),
``lpips`` (from local weights only), ``document`` (the JSON document and the table), ``page`` (--html),
``command`` (what ``mirage eval`` does).
"""
