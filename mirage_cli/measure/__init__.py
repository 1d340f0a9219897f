"""Measuring and tuning renders: ``mirage bench``, the step-cache bench and MagCache calibration."""
