"""course_utils: the small package every chapter of the course imports.

One module per idea, each taught inline in its chapter first:
config (mode, seed, device), attention, transformer, viz, exercises, glossary;
later chapters add tokenization, bert, pretraining, ner, shapes, multimodal, training.
"""
__version__ = "0.1.0"
