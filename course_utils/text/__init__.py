"""Text models (chapters 03-04 and 06): tokenization, corpora, BERT and its pretraining,
named-entity recognition, LoRA, the GPT decoder and text generation.
"""
