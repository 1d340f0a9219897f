"""Write this example's start image and exact depth map with the synthetic rig.

    python examples/room/make_room.py

Outputs, next to this script:
- ``start.png``: 8-bit RGB, 448 x 256 (W x H), the default room seen from the world origin
  (world_from_cam = identity, OpenCV: looking down +z, y down) with a 60 degree vertical fov;
- ``depth.npy``: float32 [256, 448], the exact z-depth of every pixel, in metres.

These match ``scene.yaml`` (resolution 448x256, fov 60, first camera at the identity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mirage_cli.testing import synthetic_room as synthetic

WIDTH, HEIGHT, VFOV_DEG = 448, 256, 60.0


def main(out_dir: Path = Path(__file__).resolve().parent) -> None:
    K = synthetic.intrinsics(HEIGHT, WIDTH, VFOV_DEG)
    rgb, depth = synthetic.render(K, np.eye(4), HEIGHT, WIDTH)
    image = (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)  # [H, W, 3]
    Image.fromarray(image, mode="RGB").save(out_dir / "start.png", optimize=True)
    np.save(out_dir / "depth.npy", depth.numpy().astype(np.float32))
    span = f"depth {float(depth.min()):.2f}..{float(depth.max()):.2f} m"
    print(f"wrote {out_dir / 'start.png'} and {out_dir / 'depth.npy'} ({WIDTH}x{HEIGHT}, {span})")


if __name__ == "__main__":
    main()
