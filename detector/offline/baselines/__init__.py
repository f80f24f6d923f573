"""The detectors a fraud or operations team tries first, for `detector evaluate --baseline NAME`.

Every baseline scores the same events as the LSTM, from one causal per-stream aggregate feature
builder (detector.offline.baselines.aggregate), is fitted on the same normal training data and thresholded
at the same target false-alarm rate on held-out normal streams of it. They need the `baselines`
extra (scikit-learn, PyOD, River); the daemon does not.
"""
