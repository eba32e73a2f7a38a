"""Attention and layers (chapters 01-02): attention, positions, the Transformer encoder layer,
the toy tasks that train it, and the plots and viewers for attention.
"""
