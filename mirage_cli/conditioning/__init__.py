"""What conditions a chunk: training-free pins (``conditioners``) and the recipes that denoise under
them, the trained VACE recipe included.
"""
