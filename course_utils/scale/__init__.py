"""Training at scale (chapter 08): accumulation, checkpointing, tiled attention, and the
torchrun launcher and its scripts.
"""
