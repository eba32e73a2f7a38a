"""Vision and fusion (chapters 05, 07 and 09): Sort-of-CLEVR scenes, fusing questions with
images, vision-language models, image captioning and the multimodal capstone.
"""
