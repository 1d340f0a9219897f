"""The bounds on what a user's input may ask for, each checked before anything is allocated.

Each limit is far above every real use and far below what would exhaust a machine, so that a
mistyped or hostile value ends in a clear exit-2 message within seconds instead of a crash, a
swap storm or a hang. A violation names the file, the field, the limit and the value.
"""

from __future__ import annotations

MAX_FRAMES = 4 * 3600 * 24 + 1
"""345,601 frames: four hours at 24 fps (2,880 chunks of 121 frames). Longer videos are several renders."""
MAX_CHUNK_FRAMES_LIMIT = 241
"""Frames per chunk: twice Wan2.2's 121-frame clip; a longer chunk does not fit a GPU at 1280x704."""
MAX_SIDE = 4096
"""Pixels per side of the render (Wan2.2 renders 1280x704)."""
MAX_PIXELS = 4096 * 2304
"""Pixels per rendered frame: 9.4 million (4K UHD), ten times Wan2.2's native 1280x704."""
MIN_FPS, MAX_FPS = 1.0, 240.0
"""Frame rates an MP4 of ours can carry (the time base is fps with a denominator of at most 1001)."""
MAX_STEPS = 1000
"""Denoising steps per chunk (Wan2.2 uses 50)."""
MAX_PROMPT_CHARS = 20_000
"""Characters of a prompt (the text encoder reads 512 tokens of it)."""
MAX_KEYFRAMES = 100_000
"""Keyframes of a camera path, from any source (a large COLMAP reconstruction has a few thousand)."""
MAX_COORDINATE = 1e6
"""Largest camera coordinate or look-at target in scene units (positions beyond this overflow the
interpolation and the geometry's float32)."""
MAX_SPEC_BYTES = 1 << 20
"""Size of a scene spec (1 MiB)."""
MAX_TEXT_BYTES = 64 << 20
"""Size of a camera file read as text: JSON, RealEstate10K, COLMAP text (64 MiB)."""
MAX_YAML_BYTES = 4 << 20
"""Size of a trajectory YAML (4 MiB; YAML parses slowly, and 100,000 keyframes fit in it)."""
MAX_MODEL_BYTES = 4 << 30
"""Size of each file of a COLMAP model (4 GiB: points3D of a very large reconstruction)."""
MAX_IMAGE_BYTES = 256 << 20
"""Size of a start image, mask or 16-bit depth PNG (256 MiB)."""
MAX_IMAGE_PIXELS = 100_000_000
"""Pixels of a start image, mask or depth map as stored (before it is resized to the render)."""
MAX_NESTING = 64
"""Nesting depth of a YAML or JSON document (a spec is 4 levels deep)."""
MAX_YAML_NODES = 1_000_000
"""Nodes of a YAML document once its aliases are expanded (refuses alias bombs)."""
MIN_DEPTH, MAX_DEPTH = 1e-6, 1e6
"""Usable z-depth values of a start depth map, in scene units; others are invalid pixels."""
MIN_VALID_DEPTH_SHARE = 0.01
"""At least this share of a start depth map's pixels must hold usable depth."""
MAX_WEIGHTS_BYTES = 64 << 30
"""Size of a safetensors weights file (64 GiB: a Wan2.2-14B VACE branch in float32 is about 11 GiB)."""
MAX_SAFETENSORS_HEADER_BYTES = 16 << 20
"""Size of a safetensors file's JSON header (16 MiB; a whole 14B model's header is a few hundred KiB)."""
MAX_WEIGHT_MAGNITUDE = 1e4
"""The largest |value| a trained weight (a VACE branch, a LoRA matrix) may hold. Trained Wan2.2 weights,
VACE branches and LoRA matrices stay far below it (their largest values are in the tens); a value beyond
it comes from a damaged file or one holding something other than weights, and renders flat colour."""
MAX_VRAM_BUDGET_GIB = 1 << 20
"""``--vram-budget`` in GiB (1 PiB: far above any GPU, far below a float overflow)."""
MAX_EVAL_PIXELS = 1 << 30
"""Pixels of all the frames ``mirage eval`` holds at once (frames x height x width): 3.2 GB of RGB, 1,191
frames at 1280x704. Its reference frames and depth maps are bounded with them (they must match)."""
MAX_CALIBRATION_BYTES = 1 << 20
"""Size of a MagCache calibration file (1 MiB; one of 1,000 steps with both CFG branches is about 80 KiB)."""
