"""Reading and perceiving inputs, shared by preprocessing, inference and evaluation.

Media I/O (``media``), face backends and their registry (``faces``), face identity embedders (``face_id``), lip and
mouth geometry (``lips``) and audio encoders with the per-frame feature interpolation (``audio``). It imports no
other first-party package but the config checks; everything above it imports it.
"""
