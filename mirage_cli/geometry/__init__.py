"""Pure tensor geometry: projection and back-projection (``projection``), splatting (``splatting``), and their slow twins (``twins``)."""
