"""Training and scoring the VQA models of chapter 05 (split out of :mod:`course_utils.vision.multimodal`).

Questions are flattened into a :class:`QuestionSet` (one row per question, pointing at its image's
elements). :func:`train_vqa` trains on random batches of them and, every ``eval_every`` steps,
measures accuracy on **validation** questions (images of their own, never the test images); with
``keep_best=True`` it returns the model at the evaluation point where validation accuracy was highest,
so the number of steps is chosen on validation and the test questions are scored once, afterwards,
with :func:`evaluate_vqa`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
import torch.nn.functional as F

from course_utils import config, training
from course_utils.vision import shapes
from course_utils.vision.multimodal import FUSIONS, VQAModel, count_parameters


@dataclass
class QuestionSet:
    """Questions flattened to one row each, pointing at their image's elements."""

    elements: torch.Tensor  # (N_images, N, d) image elements, or (N_images, 3, 75, 75) images
    image_index: torch.Tensor  # (Q,)
    vectors: torch.Tensor  # (Q, 11)
    question_ids: torch.Tensor  # (Q,) which of the 36 distinct questions
    subtypes: torch.Tensor  # (Q,)
    answers: torch.Tensor  # (Q,)

    @classmethod
    def from_data(cls, data: shapes.SortOfClevr, elements: torch.Tensor) -> "QuestionSet":
        if elements.shape[0] != len(data):
            raise ValueError(f"elements are given for {elements.shape[0]} images but the data has {len(data)}")
        per_image = data.answers.shape[1]
        return cls(
            elements,
            torch.arange(len(data)).repeat_interleave(per_image),
            data.questions.flatten(0, 1),
            data.question_ids.flatten(),
            data.subtypes.flatten(),
            data.answers.flatten(),
        )

    def __len__(self) -> int:
        return self.answers.shape[0]

    def texts(self, rows: torch.Tensor) -> list:
        return [shapes.ALL_QUESTION_TEXTS[i] for i in self.question_ids[rows].tolist()]


ACCURACY_KEYS = ("non-relational", "relational", "overall")  # what each evaluation point records


@dataclass
class TrainResult:
    """What :func:`train_vqa` returns: the run's :class:`~course_utils.training.History` (the loss of
    every step; at each evaluation point the validation accuracies, logged ``eval_<key>``, and the
    training seconds so far, ``train_seconds``) and, read from it, the learning curve."""

    name: str
    history: training.History = field(default_factory=training.History)
    train_seconds: float = 0.0
    parameters: int = 0
    best_step: int = 0  # the evaluation point with the best validation accuracy

    def _values(self, name: str) -> list:
        return self.history.values(name) if name in self.history else []

    @property
    def losses(self) -> list:
        """The loss of every step."""
        return self._values("loss")

    @property
    def steps(self) -> list:
        """The evaluation points (steps)."""
        return self.history.steps("eval_overall") if "eval_overall" in self.history else []

    @property
    def seconds(self) -> list:
        """Training seconds at each evaluation point (evaluation not counted)."""
        return self._values("train_seconds")

    @property
    def accuracy(self) -> list:
        """Validation accuracy at each evaluation point: {"non-relational", "relational", "overall"}."""
        return [dict(zip(ACCURACY_KEYS, point)) for point in zip(*(self._values(f"eval_{k}") for k in ACCURACY_KEYS))]


def _forward_rows(
    model: VQAModel, qs: QuestionSet, rows: torch.Tensor, device, questions_per_image: int = 1
) -> torch.Tensor:
    """Logits for the questions ``rows``; with ``questions_per_image = k`` the rows come in runs
    of k questions about the same image, and each image's elements are computed once."""
    texts = qs.texts(rows) if getattr(model.question_encoder, "needs_text", False) else None
    images = qs.image_index[rows[::questions_per_image]]
    elements = qs.elements[images].to(device)
    return model(elements, qs.vectors[rows].to(device), texts, questions_per_image=questions_per_image)


def _sample_rows(qs: QuestionSet, batch_size: int, questions_per_image: int, g: torch.Generator) -> torch.Tensor:
    """Random questions; with k = ``questions_per_image`` > 1, batch_size // k random images and k of
    each image's questions (the rows of an image are consecutive, as QuestionSet.from_data makes them)."""
    if questions_per_image == 1:
        return torch.randint(len(qs), (batch_size,), generator=g)
    per_image = len(qs) // qs.elements.shape[0]
    if questions_per_image > per_image:
        raise ValueError(f"questions_per_image={questions_per_image} but each image has {per_image} questions")
    images = torch.randint(qs.elements.shape[0], (max(1, batch_size // questions_per_image),), generator=g)
    which = torch.rand(images.shape[0], per_image, generator=g).argsort(1)[:, :questions_per_image]
    return (images[:, None] * per_image + which).flatten()


@torch.no_grad()
def predict(model: VQAModel, qs: QuestionSet, batch_size: int = 500, device=None) -> torch.Tensor:
    """Answer index for every question of ``qs``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        _forward_rows(model, qs, torch.arange(i, min(i + batch_size, len(qs))), device).argmax(-1).cpu()
        for i in range(0, len(qs), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def accuracy_by_subtype(predictions: torch.Tensor, qs: QuestionSet) -> dict:
    """Accuracy per subtype, plus ``non-relational``, ``relational`` and ``overall``."""
    correct = (predictions == qs.answers).float()
    result = {name: correct[qs.subtypes == s].mean().item() for s, name in enumerate(shapes.SUBTYPES)}
    relational = torch.tensor(shapes.RELATIONAL)[qs.subtypes]
    result["non-relational"] = correct[~relational].mean().item()
    result["relational"] = correct[relational].mean().item()
    result["overall"] = correct.mean().item()
    return result


def evaluate_vqa(model: VQAModel, qs: QuestionSet, batch_size: int = 500) -> dict:
    return accuracy_by_subtype(predict(model, qs, batch_size), qs)


def _param_groups(model: nn.Module, lr: float) -> list:
    """Trainable parameters; those of a submodule with an ``lr_scale`` (a fine-tuned BERT) at lr * scale."""
    scaled, seen = [], set()
    for module in model.modules():
        scale = getattr(module, "lr_scale", None)
        if scale is not None and getattr(module, "finetune", True):
            ps = [p for n, p in module.named_parameters() if p.requires_grad and n.startswith("bert.")]
            scaled.append({"params": ps, "lr": lr * scale})
            seen.update(id(p) for p in ps)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return [{"params": rest, "lr": lr}] + [g for g in scaled if g["params"]]


def lr_factor(step: int, steps: int, warmup: float = 0.05, decay: float = 0.3) -> float:
    """Warm up over the first 5% of the steps, hold, then a cosine down to 0 over the last 30%.

    Holding the peak rate matters here: some skills (closest / furthest) are learned suddenly,
    after thousands of steps on a plateau, and a decay that starts early can stop that.
    """
    warm = max(1, int(warmup * steps))
    if step < warm:
        return (step + 1) / warm
    start = int((1 - decay) * steps)
    if step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step - start, steps - start) / max(1, steps - start)))


def train_vqa(
    model: VQAModel,
    train: QuestionSet,
    validation: QuestionSet,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    eval_every: int | None = None,
    eval_questions: int = 2000,
    name: str = "",
    weight_decay: float = 0.0,
    progress: bool = True,
    seed: int = 0,
    questions_per_image: int = 1,
    keep_best: bool = False,
) -> TrainResult:
    """AdamW for ``steps`` batches of random questions, the learning rate shaped by :func:`lr_factor`.

    ``questions_per_image = k > 1`` (for training from pixels) fills each batch with k questions
    of each of batch_size // k images, so the CNN runs once per image instead of once per question.

    Every ``eval_every`` steps (default: 10 times in all) accuracy on the first ``eval_questions``
    **validation** questions is recorded against training time (evaluation not counted): the
    learning curve. Pass validation questions here, never the test questions: with
    ``keep_best=True`` the model returned is the one at the evaluation point with the highest
    overall validation accuracy (the earliest on a tie), and ``result.best_step`` says which, so the
    number of steps is chosen on validation; score the test questions once, afterwards.

    The loop is the course's one, :func:`course_utils.training.train`, without gradient clipping.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(_param_groups(model, lr), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    probe = QuestionSet(
        validation.elements,
        *(
            t[:eval_questions]
            for t in (
                validation.image_index,
                validation.vectors,
                validation.question_ids,
                validation.subtypes,
                validation.answers,
            )
        ),
    )
    result = TrainResult(name=name, parameters=count_parameters(model))
    g = torch.Generator().manual_seed(seed)

    def random_questions():
        while True:
            yield _sample_rows(train, batch_size, questions_per_image, g)

    def loss_of(model: VQAModel, rows: torch.Tensor) -> torch.Tensor:
        logits = _forward_rows(model, train, rows, device, questions_per_image)
        return F.cross_entropy(logits, train.answers[rows].to(device))

    start, evaluating = time.perf_counter(), 0.0

    def validate(model: VQAModel) -> dict:
        nonlocal evaluating
        began = time.perf_counter()
        result.history.log(result.history.steps_done, train_seconds=began - start - evaluating)
        acc = evaluate_vqa(model, probe)
        evaluating += time.perf_counter() - began
        return {k: acc[k] for k in ACCURACY_KEYS}

    # keep_best: EarlyStopping keeps the weights of the first evaluation with the highest overall accuracy
    # (its "better" is strict); patience=steps never stops the run, which has at most steps evaluations.
    keeper = training.EarlyStopping(patience=steps, mode="max", monitor="overall") if keep_best else None
    training.train(
        model,
        random_questions(),
        loss_of,
        opt,
        sched,
        steps=steps,
        max_grad_norm=None,
        eval_fn=validate,
        eval_every=eval_every or max(1, steps // 10),
        early_stopping=keeper,
        progress=progress,
        desc=name or "training",
        history=result.history,
    )
    overall = [a["overall"] for a in result.accuracy]
    result.best_step = result.steps[overall.index(max(overall))]  # the same point, read off the curve
    result.train_seconds = time.perf_counter() - start - evaluating
    model.eval()
    return result


# Chapter 05's step budgets, per image input and fusion. They are compute budgets: what each method
# gets so that the chapter's full mode fits in about a quarter of an hour on a 2-core CPU (a
# relation-network step costs about three early-fusion steps, a fine-tuned BERT step about twelve, so
# on a CPU the chapter fine-tunes BERT only when asked). The CPU budgets stop the relation network and
# cross-attention before their validation curves flatten; the GPU budgets let every run go on.
# Within its budget a run keeps the step with the best validation accuracy
# (train_vqa(..., keep_best=True)), so the steps in the chapter's table are chosen on validation.
_CPU_FUSION_STEPS = {
    "concat": 2000,
    "sum": 2000,
    "product": 2000,
    "film": 2000,
    "cross_attention": 4000,
    "relation_network": 10000,
}
_BUDGETS = {
    "fast": {
        "objects": dict.fromkeys(FUSIONS, 150),
        "patches": dict.fromkeys(FUSIONS, 100),
        "bert": {"BERT frozen": 100, "BERT fine-tuned": 100},
        "channels": 100,
    },
    "full": {
        "objects": dict(_CPU_FUSION_STEPS),
        "patches": dict(_CPU_FUSION_STEPS),
        "bert": {"BERT frozen": 4000, "BERT fine-tuned": 2000},
        "channels": 1000,
    },
    "gpu": {
        "objects": dict.fromkeys(FUSIONS, 30000),
        "patches": dict.fromkeys(FUSIONS, 30000),
        "bert": {"BERT frozen": 20000, "BERT fine-tuned": 20000},
        "channels": 30000,
    },
}


def step_budgets(steps=None) -> dict:
    """Steps per run of chapter 05 for the current mode (:func:`course_utils.config.pick`):
    ``{"objects": {fusion: n}, "patches": {fusion: n}, "bert": {encoder: n}, "channels": n}``, where
    ``encoder`` is "BERT frozen" or "BERT fine-tuned".

    ``steps``: None (the defaults), an int (every run), or a dict merged into the defaults, e.g.
    ``{"objects": {"concat": 40000}, "bert": {"BERT fine-tuned": 2000}}`` (a fusion not listed, such as a
    new model, is added).
    """
    budgets = copy.deepcopy(config.pick(fast=_BUDGETS["fast"], full=_BUDGETS["full"], gpu=_BUDGETS["gpu"]))
    if steps is None:
        return budgets
    if isinstance(steps, bool) or not isinstance(steps, (int, dict)):
        raise TypeError(
            f"steps must be None, an int or a dict, got {steps!r}; with papermill pass a dict "
            "as YAML: -y 'steps: {objects: {concat: 40000}}'"
        )
    if isinstance(steps, int):
        return {
            key: dict.fromkeys(value, steps) if isinstance(value, dict) else steps for key, value in budgets.items()
        }
    for key, value in steps.items():
        if key not in budgets:
            raise ValueError(f"unknown key {key!r} in steps; the keys are {sorted(budgets)}")
        if isinstance(budgets[key], dict) != isinstance(value, dict):
            kind = "a dict {fusion: steps}" if isinstance(budgets[key], dict) else "an int"
            raise TypeError(f"steps[{key!r}] must be {kind}, got {value!r}")
        budgets[key] = {**budgets[key], **value} if isinstance(value, dict) else value
    return budgets
