"""The run directory: its layout, checkpoints, the meta records, the writer lock, inspect and export."""
