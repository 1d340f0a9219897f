"""``mirage render``: the session and its stages, the chunk rollout, the start inputs, the outputs, the
run's config, parallel ranks and the preview.
"""
