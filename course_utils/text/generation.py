"""Text generation for causal language models: greedy, sampling (temperature, top-k, top-p) and beam
search, with a KV cache; for the course's models and transformers' alike.

``generate(model, input_ids, max_new_tokens, ...)`` returns the prompt followed by the new tokens
(a LongTensor), as ``transformers``' ``generate`` does. The tests prove it gives the same token ids
as transformers' ``generate`` on the same weights (greedy; beam search with
``num_return_sequences=1`` and ``early_stopping=True``), with the installed transformers 5.x.

**What a model must offer** (chapter 07's captioner plugs in the same way):

* ``model(input_ids, attention_mask=..., past_key_values=..., use_cache=...)`` returning the
  logits first: a tensor, a tuple ``(logits, cache, ...)``, or an object with ``.logits`` and
  ``.past_key_values`` (transformers' models, whose cache argument is called ``cache`` from
  5.x on, are recognised and called with the name their ``forward`` takes);
  ``position_ids=`` is passed too when ``forward`` accepts it (positions skip left padding);
  ``model_kwargs`` (e.g. an image's encoder states) are passed to every call;
* optional ``model.reorder_cache(cache, beam_idx)``: otherwise a transformers ``Cache`` reorders
  itself, and any other cache (a nested tuple/list of tensors, batch first) is reordered by
  ``index_select`` on dimension 0 of every tensor;
* optional ``model.max_positions`` (int; transformers' ``config.n_positions`` or
  ``max_position_embeddings`` otherwise): generation stops with a warning before it.

**Beam search** (the semantics of transformers 5.x with ``early_stopping=True``): the batch is
expanded to ``B * num_beams`` rows by ``repeat_interleave``; every step takes the best
``2 * num_beams`` continuations over all beams of an example (beam = index // vocab, token =
index % vocab); a continuation that ends with EOS, or reaches the last allowed step, and ranks
among the first ``num_beams`` becomes a *finished hypothesis* with score
``sum of log-probs / generated_length ** length_penalty`` (the EOS token and its log-prob count);
the others go on as the running beams. An example is done when it holds ``num_beams`` finished
hypotheses; when none ends with EOS, the running beams are finished at the length limit (the
fall-back). The best finished hypothesis is returned, shorter ones filled with ``pad_token_id``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "BeamSearchOutput",
    "GenerationInputError",
    "beam_search",
    "filter_logits",
    "generate",
    "length_penalised_score",
    "max_positions_of",
    "reorder_cache",
    "sequence_log_prob",
    "top_p_mask",
]

_NEG = -1.0e9  # "impossible" score, as transformers uses (finite, so sums and sorting stay well defined)


class GenerationInputError(ValueError):
    """A generation setting or prompt that cannot work, with the fix."""


class BeamSearchOutput(NamedTuple):
    sequences: torch.Tensor  # (B, prompt + longest returned): the best finished hypothesis per example
    scores: torch.Tensor  # (B,): its length-penalised score


# ---------------------------------------------------------------- calling a model


class _Caller:
    """Calls any supported model the same way and returns (last-position logits (N, V) float32, cache)."""

    def __init__(self, model, model_kwargs: dict | None):
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError, AttributeError):
            params = {}
        self.takes_positions = "position_ids" in params
        # transformers 5.x renamed `past_key_values` to `cache` (the old name still works, with a warning)
        self.cache_name = "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"

    def __call__(self, input_ids, attention_mask, position_ids, cache, use_cache: bool):
        kwargs = dict(self.model_kwargs, attention_mask=attention_mask, use_cache=use_cache)
        kwargs[self.cache_name] = cache
        if self.takes_positions:
            kwargs["position_ids"] = position_ids
        out = self.model(input_ids, **kwargs)
        if isinstance(out, torch.Tensor):
            logits, new_cache = out, None
        elif hasattr(out, "logits"):
            logits = out.logits
            if isinstance(out, dict) and "cache" in out:  # transformers 5.x outputs (past_key_values warns there)
                new_cache = out["cache"]
            else:
                new_cache = getattr(out, "past_key_values", None)
        elif isinstance(out, (tuple, list)):
            logits, new_cache = out[0], (out[1] if len(out) > 1 else None)
        else:
            raise TypeError(
                f"the model returned {type(out).__name__}; generate needs the logits first "
                "(a tensor, a tuple (logits, cache), or an object with .logits)"
            )
        if use_cache and new_cache is None:
            raise TypeError(
                f"{type(self.model).__name__} returned no cache with use_cache=True: return "
                "(logits, cache), or call generate(..., use_cache=False)"
            )
        return logits[:, -1, :].float(), (new_cache if use_cache else None)


def max_positions_of(model) -> int | None:
    """How many positions the model can take: ``model.max_positions``, else its config's position table."""
    found = getattr(model, "max_positions", None)
    if isinstance(found, int):
        return found
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def reorder_cache(model, cache, beam_idx: torch.Tensor):
    """The cache rows in the order of ``beam_idx`` (which beam each new beam continues)."""
    if cache is None:
        return None
    if hasattr(model, "reorder_cache"):
        return model.reorder_cache(cache, beam_idx)
    if hasattr(cache, "reorder_cache"):  # a transformers Cache object reorders itself, in place
        cache.reorder_cache(beam_idx)
        return cache
    return _select_rows(cache, beam_idx)


def _select_rows(nested, index: torch.Tensor):
    if isinstance(nested, torch.Tensor):
        return nested.index_select(0, index.to(nested.device))
    if isinstance(nested, (tuple, list)):
        return type(nested)(_select_rows(item, index) for item in nested)
    if nested is None:
        return None
    raise TypeError(
        f"cannot reorder a cache holding {type(nested).__name__}: give the model a "
        "reorder_cache(cache, beam_idx) method, or keep the cache a nested tuple of tensors"
    )


def _expand_rows(value, batch: int, times: int):
    """Repeat every batch-first tensor ``times`` times, each row next to its copies (row b -> b*times ...)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value.repeat_interleave(times, dim=0)
    if isinstance(value, (tuple, list)):
        return type(value)(_expand_rows(v, batch, times) for v in value)
    return value


# ---------------------------------------------------------------- sampling filters


def top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for the tokens nucleus sampling keeps: the most likely ones, until their probability reaches top_p.

    Computed as transformers does: sort ascending and drop every token whose probability, added to
    that of all less likely tokens, is at most ``1 - top_p``; the most likely token is always kept.
    """
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return ~drop


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The logits sampling draws from: divided by the temperature, then only the top-k, then only the
    top-p nucleus kept (the others set to -inf), in transformers' order."""
    _check_sampling(temperature, top_k, top_p)
    scores = logits / temperature if temperature != 1.0 else logits
    if top_k is not None:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))  # ties with the k-th are kept
    if top_p is not None and top_p < 1.0:
        scores = scores.masked_fill(~top_p_mask(scores, top_p), float("-inf"))
    return scores


def _check_sampling(temperature, top_k, top_p) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature):
        raise GenerationInputError(f"temperature must be a positive number, got {temperature!r}")
    if temperature <= 0:
        raise GenerationInputError(
            f"temperature={temperature} would divide by zero; temperature -> 0 means always the "
            "most likely token: use greedy decoding (do_sample=False)."
        )
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise GenerationInputError(f"top_k must be a positive integer (or None for no limit), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1):
        raise GenerationInputError(
            f"top_p must be in (0, 1] (the probability mass to keep; 1 keeps every token), got {top_p!r}"
        )


# ---------------------------------------------------------------- checks


def _check_inputs(
    model,
    input_ids,
    max_new_tokens,
    num_beams,
    length_penalty,
    do_sample,
    temperature,
    top_k,
    top_p,
    eos_token_id,
    pad_token_id,
    attention_mask,
) -> None:
    if not callable(model):
        raise TypeError(f"model must be a torch model (callable), got {type(model).__name__}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int):
        raise GenerationInputError(
            "input_ids must be a LongTensor of token ids (batch, length), got "
            + (str(input_ids.dtype) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__)
        )
    if input_ids.dim() != 2:
        raise GenerationInputError(
            f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
            "for one prompt use ids.unsqueeze(0)."
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise GenerationInputError(
            f"the prompt is empty (shape {tuple(input_ids.shape)}): give at least one token, "
            "e.g. the end-of-text token to start from nothing."
        )
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise GenerationInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1:
        raise GenerationInputError(f"num_beams must be a positive integer, got {num_beams!r}")
    if not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty):
        raise GenerationInputError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if do_sample:
        _check_sampling(temperature, top_k, top_p)
        if num_beams > 1:
            raise GenerationInputError(
                "sampling inside beam search is not supported: use num_beams=1 with "
                "do_sample=True, or do_sample=False for beam search."
            )
    else:
        if temperature is not None and isinstance(temperature, (int, float)) and temperature <= 0:
            _check_sampling(temperature, None, None)
        if top_p is not None or top_k is not None:
            _check_sampling(1.0, top_k, top_p)
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise GenerationInputError(f"{name} must be a non-negative integer token id (or None), got {value!r}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise GenerationInputError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids "
            f"{tuple(input_ids.shape)}: one 1/0 per token (1 = real, 0 = padding)."
        )
    limit = max_positions_of(model)
    if limit is not None and input_ids.shape[1] > limit:
        raise GenerationInputError(
            f"the prompt has {input_ids.shape[1]} tokens but the model has only {limit} "
            f"positions: keep the last {limit - 1} tokens (input_ids[:, -{limit - 1}:])."
        )


def _new_token_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    limit = max_positions_of(model)
    # the model reads at most `limit` tokens; the token it predicts from them is never read back,
    # so a sequence may end one past the position table (as transformers lets it)
    if limit is not None and prompt_length + max_new_tokens > limit + 1:
        allowed = limit + 1 - prompt_length
        warnings.warn(
            f"generation stops after {allowed} new tokens instead of {max_new_tokens}: the model has "
            f"{limit} positions and the prompt uses {prompt_length}.",
            stacklevel=3,
        )
        return allowed
    return max_new_tokens


def _default_mask(input_ids, pad_token_id, eos_token_id):
    """transformers' rule: the padding is where the pad token is, unless pad == eos (then no padding)."""
    if pad_token_id is not None and pad_token_id != eos_token_id and bool((input_ids == pad_token_id).any()):
        return (input_ids != pad_token_id).long()
    return torch.ones_like(input_ids)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    mask = mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


# ---------------------------------------------------------------- the entry point


def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Prompt + up to ``max_new_tokens`` new tokens, (B, P + new), as a LongTensor.

    Greedy (default), sampling (``do_sample=True`` with ``temperature``, ``top_k``, ``top_p``;
    ``generator`` makes it repeatable) or beam search (``num_beams > 1``, ``length_penalty``:
    scores are divided by length ** length_penalty). Generation of an example stops at
    ``eos_token_id``; finished rows are filled with ``pad_token_id`` (default: the EOS id).
    ``attention_mask`` (B, P) marks left padding (default: where ``pad_token_id`` is, unless it
    equals the EOS id). ``use_cache=False`` recomputes the whole sequence at every step.
    """
    _check_inputs(
        model,
        input_ids,
        max_new_tokens,
        num_beams,
        length_penalty,
        do_sample,
        temperature,
        top_k,
        top_p,
        eos_token_id,
        pad_token_id,
        attention_mask,
    )
    if getattr(model, "training", False):
        warnings.warn(
            "the model is in training mode, so dropout makes generation random: call model.eval() first.", stacklevel=2
        )
    if pad_token_id is None:
        pad_token_id = eos_token_id
    if num_beams > 1:
        return beam_search(
            model,
            input_ids,
            max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            use_cache=use_cache,
            attention_mask=attention_mask,
            model_kwargs=model_kwargs,
            _checked=True,
        ).sequences
    steps = _new_token_budget(model, input_ids.shape[1], max_new_tokens)
    if attention_mask is None:
        attention_mask = _default_mask(input_ids, pad_token_id, eos_token_id)
    call = _Caller(model, model_kwargs)
    ids, mask = input_ids, attention_mask.long()
    positions = _positions(mask)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    cache = None
    with torch.no_grad():
        for _ in range(steps):
            if use_cache and cache is not None:  # only the newest token: the cache holds the rest
                logits, cache = call(ids[:, -1:], mask, positions[:, -1:], cache, True)
            else:
                logits, cache = call(ids, mask, positions, None, use_cache)
            if do_sample:
                probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
                next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                next_tokens = logits.argmax(dim=-1)
            if eos_token_id is not None:  # finished rows only grow padding
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_token_id))
            ids = torch.cat([ids, next_tokens[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if eos_token_id is not None:
                unfinished &= next_tokens != eos_token_id
                if not bool(unfinished.any()):
                    break
    return ids


def beam_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    attention_mask: torch.Tensor | None = None,
    model_kwargs: dict[str, Any] | None = None,
    _checked: bool = False,
) -> BeamSearchOutput:
    """Beam search (see the module docstring); returns the best hypothesis per example and its score."""
    if not _checked:
        _check_inputs(
            model,
            input_ids,
            max_new_tokens,
            num_beams,
            length_penalty,
            False,
            1.0,
            None,
            None,
            eos_token_id,
            pad_token_id,
            attention_mask,
        )
        if pad_token_id is None:
            pad_token_id = eos_token_id
    steps = _new_token_budget(model, input_ids.shape[1], max_new_tokens)
    if attention_mask is None:
        attention_mask = _default_mask(input_ids, pad_token_id, eos_token_id)
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    fill = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    n_keep = 2 * num_beams  # candidates kept per step: enough to continue num_beams beams after EOS ones finish
    first_beams = torch.arange(n_keep, device=device) < num_beams  # only these ranks may finish a hypothesis
    call = _Caller(model, {k: _expand_rows(v, batch, num_beams) for k, v in (model_kwargs or {}).items()})

    # every example becomes num_beams rows, next to each other: rows b*num_beams .. b*num_beams + num_beams - 1
    running = input_ids.repeat_interleave(num_beams, dim=0)  # (B*nb, P + t)
    mask = attention_mask.long().repeat_interleave(num_beams, dim=0)
    positions = _positions(mask)
    running_scores = torch.zeros(batch, num_beams, device=device)
    running_scores[:, 1:] = _NEG  # at step 1 all beams are the same: take the top-k from beam 0 only
    total_len = prompt_len + steps
    finished = torch.full((batch, num_beams, total_len), fill, dtype=torch.long, device=device)
    finished_scores = torch.full((batch, num_beams), _NEG, device=device)
    finished_real = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)  # slot holds a hypothesis
    finished_lengths = torch.zeros(batch, num_beams, dtype=torch.long, device=device)  # its new tokens
    row_offset = (torch.arange(batch, device=device) * num_beams)[:, None]
    cache = None
    with torch.no_grad():
        for step in range(steps):
            if use_cache and cache is not None:
                logits, cache = call(running[:, -1:], mask, positions[:, -1:], cache, True)
            else:
                logits, cache = call(running, mask, positions, None, use_cache)
            log_probs = F.log_softmax(logits, dim=-1)  # (B*nb, V)
            vocab = log_probs.shape[-1]
            totals = (running_scores[:, :, None] + log_probs.view(batch, num_beams, vocab)).view(batch, -1)
            top_scores, top_index = torch.topk(totals, n_keep, dim=1)  # (B, 2nb) over all beams' tokens
            beam = top_index // vocab  # which beam it continues
            token = top_index % vocab  # with which token
            source_rows = (beam + row_offset).view(-1)
            candidates = torch.cat([running[source_rows], token.view(-1, 1)], dim=1).view(batch, n_keep, -1)
            last_step = step == steps - 1
            ends = torch.full_like(token, last_step, dtype=torch.bool)
            if eos_token_id is not None:
                ends |= token == eos_token_id

            # finished hypotheses: only the first num_beams ranks, only while the example is not full
            full = finished_real.all(dim=1, keepdim=True)  # early_stopping=True
            may_finish = ends & first_beams[None, :] & ~full
            generated = step + 1  # new tokens, EOS included
            new_scores = torch.where(
                may_finish, top_scores / (generated**length_penalty), torch.full_like(top_scores, _NEG)
            )
            padded = torch.full((batch, n_keep, total_len), fill, dtype=torch.long, device=device)
            padded[:, :, : candidates.shape[2]] = candidates
            merged_scores = torch.cat([finished_scores, new_scores], dim=1)
            best = torch.topk(merged_scores, num_beams, dim=1).indices  # keep the best num_beams
            finished = torch.cat([finished, padded], dim=1).gather(1, best[:, :, None].expand(-1, -1, total_len))
            finished_real = torch.cat([finished_real, may_finish], dim=1).gather(1, best)
            finished_scores = merged_scores.gather(1, best)
            finished_lengths = torch.cat([finished_lengths, torch.full_like(token, generated)], dim=1).gather(1, best)

            # running beams: the best num_beams candidates that did not just end
            going_on = top_scores + ends.float() * _NEG
            keep = torch.topk(going_on, num_beams, dim=1).indices
            running_scores = going_on.gather(1, keep)
            running = candidates.view(batch * n_keep, -1)[
                (keep + torch.arange(batch, device=device)[:, None] * n_keep).view(-1)
            ]
            beam_idx = source_rows.view(batch, n_keep).gather(1, keep).view(-1)  # old row each new beam extends
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if bool(finished_real.all()) or last_step:
                break
            cache = reorder_cache(model, cache, beam_idx) if use_cache else None

    # the best finished hypothesis of each example, cut after the longest of them (the rest is fill)
    longest = int(finished_lengths[:, 0].max())
    return BeamSearchOutput(finished[:, 0, : prompt_len + longest], finished_scores[:, 0])


# ---------------------------------------------------------------- scoring sequences


def sequence_log_prob(
    model, sequences: torch.Tensor, prompt_length: int, eos_token_id: int | None = None, pad_token_id: int | None = None
) -> torch.Tensor:
    """Sum of log P(token | tokens before it) over the generated part of each sequence, (B,).

    Tokens after the first EOS (the padding of a finished row) are not counted; the EOS is.
    """
    with torch.no_grad():
        out = model(sequences)
        logits = out if isinstance(out, torch.Tensor) else (out.logits if hasattr(out, "logits") else out[0])
        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = log_probs.gather(-1, sequences[:, 1:, None]).squeeze(-1)[:, prompt_length - 1 :]
    counted = torch.ones_like(picked, dtype=torch.bool)
    if eos_token_id is not None:
        is_eos = sequences[:, prompt_length:] == eos_token_id
        after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
        counted &= ~after_eos
    return (picked * counted).sum(dim=1)


def length_penalised_score(log_prob: torch.Tensor | float, generated_length: int, length_penalty: float = 1.0):
    """Beam search's ranking score: log-probability / generated_length ** length_penalty."""
    return log_prob / (generated_length**length_penalty)
