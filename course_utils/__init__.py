"""course_utils: the small package every chapter of the course imports.

One module per idea, each taught inline in its chapter first, grouped by the course's arc:

* the top level: what every chapter uses -- ``config`` (mode, seed, device), ``paths``,
  ``training`` (the one training loop, ``History``, early stopping), ``checkpoints``,
  ``glossary``, and ``exercises`` (one module of checks per chapter);
* ``layers``: attention and layers (chapters 01-02);
* ``text``: text models (chapters 03-04, 06);
* ``vision``: vision and fusion (chapters 05, 07, 09);
* ``scale``: training at scale (chapter 08).

Imports go one way, down this list: the top level imports no folder, ``layers`` only the top
level, ``text`` the two above, ``vision`` and ``scale`` any of those (never each other);
``tests/test_package_layout.py`` checks it.

The modules lived at the top level before they were grouped; the old names still import and
are the same module objects (``course_utils.attention is course_utils.layers.attention``), so
code written against the entry points the course design names keeps working.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.2.0"

MOVED = {
    "attention": "layers",
    "positions": "layers",
    "toy_tasks": "layers",
    "transformer": "layers",
    "viz": "layers",
    "bert": "text",
    "bert_inputs": "text",
    "bert_layers": "text",
    "bert_tasks": "text",
    "bert_weights": "text",
    "bio_tags": "text",
    "corpus": "text",
    "decoder": "text",
    "generation": "text",
    "generation_viz": "text",
    "intents": "text",
    "lora": "text",
    "ner": "text",
    "ner_data": "text",
    "ner_models": "text",
    "pretraining": "text",
    "tokenization": "text",
    "bert_decoder": "vision",
    "captioning": "vision",
    "captioning_viz": "vision",
    "captions": "vision",
    "contrastive": "vision",
    "cross_attention": "vision",
    "multimodal": "vision",
    "patch_cnn": "vision",
    "sentiment": "vision",
    "sentiment_data": "vision",
    "shapes": "vision",
    "vl_models": "vision",
    "vl_retrieval": "vision",
    "vqa_plots": "vision",
    "vqa_training": "vision",
    "launch": "scale",
    "scaling": "scale",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``course_utils.<old name>`` and hands back the module at its new place (no copy)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        name = spec.name.partition(".")[2]
        module = importlib.import_module(f"{__name__}.{MOVED[name]}.{name}")
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec  # the import system set the old name's spec; put the real one back


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before any other finder: only the old names answer here
